Feature: Personal data
  Email and name are personal data. They are stored encrypted at rest with a key per member,
  never in plain text in events, snapshots, views, exports or logs. The self-referral rule
  works on a keyed hash of the normalised email, not the email. A member's personal data can
  be exported (everything held about them, as JSON) and erased. An erasure destroys the
  member's key (crypto-shredding) and records that it happened; the ledger keeps the member's
  id and history (amounts, points, tiers), the export's hash chain still verifies, and replay
  still reproduces every read model; the email and name are gone everywhere, for good.
  Enrolling a new member with the erased member's email works as for anyone new.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And "ann" is enrolled with the email "ann.zephyrine@example.com" and the name "Ann Zephyrine"
    And "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs

  Scenario: The email and name are kept only encrypted, yet read by whoever may read the member
    Then no table of the store holds "ann.zephyrine@example.com" or "Ann Zephyrine" in plain text
    And the status of "ann" shows the email "ann.zephyrine@example.com" and the name "Ann Zephyrine"

  Scenario: A member asks for everything held about it
    When member ann asks for the personal data of "ann"
    Then the response status is 200
    And the personal data shows the email "ann.zephyrine@example.com", the purchase "A-1" and every event of "ann"

  Scenario: An erasure destroys the member's key and keeps its history
    When the admin erases the personal data of "ann"
    Then the response status is 200
    And the status of "ann" shows no email, no name and the personal data "erased"
    And "ann" has 120 available points and 0 pending
    And the event log shows the erasure of "ann" by the admin's key
    And the export of the ledger verifies

  Scenario: Erasing twice answers the first receipt again
    Given the admin erased the personal data of "ann"
    When the admin erases the personal data of "ann"
    Then the response status is 200
    And the receipt is the one of the first erasure

  Scenario: Only admins erase, and only admins and the member read personal data
    When these callers erase the personal data of "ann":
      | caller     | expected status |
      | storefront | 403             |
      | auditor    | 403             |
      | member ann | 403             |
      | admin      | 200             |
    Then each caller gets its expected status
    When these callers ask for the personal data of "ann":
      | caller     | expected status |
      | storefront | 403             |
      | auditor    | 403             |
      | member ann | 200             |
      | admin      | 200             |
    Then each caller gets its expected status

  Scenario: The erased email enrols a new member as anyone new
    Given the admin erased the personal data of "ann"
    When the storefront enrols "ann-2" with the email "ann.zephyrine@example.com"
    Then the response status is 201
    And "ann-2" is enrolled with the email "ann.zephyrine@example.com"

  Scenario: A friend with the referrer's own email, however written, is not a referral
    When a friend enrols as "ann-again" with the email "Ann.Zephyrine+promo@Example.com" and the code of "ann"
    Then the response status is 422
