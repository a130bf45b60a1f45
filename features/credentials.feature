Feature: Credentials can be listed, revoked and rotated
  API keys can be listed, revoked and rotated; a revoked key is refused by every server
  process within a second. Member tokens can be revoked for a member: every token issued
  before the revocation is refused. A key's secret is shown once, when it is created, and
  never again; the shop keeps at least one admin key that works, so that it cannot lock
  itself out.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled
    And member "bob" is enrolled
    And the admin created a storefront key "web shop"

  Scenario: The keys are listed with their role, state and last use, never their secret
    Given the holder of the key "web shop" reads the status of "ann"
    When the admin lists the keys
    Then the list shows "web shop" as an active storefront key
    And the list shows "web shop" last used at 2026-01-05T09:00:00+00:00
    And the list shows no secret

  Scenario: A revoked key is refused by every server process within a second
    Given a second server process on the same database
    And the holder of the key "web shop" reads the status of "ann" from the second server process
    When the admin revokes the key "web shop"
    Then the response status is 200
    And the holder of the key "web shop" is refused
    And the second server process refuses the key "web shop" within a second
    And the list shows "web shop" as a revoked storefront key

  Scenario: Revoking a key twice answers the same
    Given the admin revoked the key "web shop"
    When 60 seconds pass
    And the admin revokes the key "web shop"
    Then the response status is 200
    And the response is the same as the first revocation

  Scenario: A key that was never issued cannot be revoked
    When the admin revokes a key that was never issued
    Then the response status is 404

  Scenario: The last admin key that works is not revoked: the shop would lock itself out
    When the admin revokes its own key
    Then the response status is 409
    And the problem says "the shop would lock itself out"
    And the admin can still list the keys

  Scenario: A rotated key is replaced by a new one with the same name and role
    When the operator rotates the key "web shop"
    Then the holder of the key "web shop" is refused
    And the holder of the new key "web shop" may read the status of "ann"
    And the list shows "web shop" as a revoked storefront key
    And the list shows "web shop" as an active storefront key

  Scenario: A key made to expire is refused once it has expired
    Given the admin created an auditor key "year-end audit" that expires in 2 days
    When 1 day passes
    Then the holder of the key "year-end audit" may read the status of "ann"
    When 1 day passes
    Then the holder of the key "year-end audit" is refused
    And the list shows "year-end audit" as an expired auditor key

  Scenario: Revoking a member's tokens refuses every token issued before, and only those
    Given the storefront minted a member token for "ann" valid for 3600 seconds
    And the storefront minted a member token for "bob" valid for 3600 seconds
    And a second server process on the same database
    And the second server process accepts the member token of "ann"
    When 1 second passes
    And the storefront revokes the member tokens of "ann"
    Then the response status is 201
    When the member ann reads the status of "ann"
    Then the response status is 401
    And the second server process refuses the member token of "ann" within a second
    When the member bob reads the status of "bob"
    Then the response status is 200
    When 1 second passes
    And the storefront mints a new member token for "ann"
    And the member ann reads the status of "ann"
    Then the response status is 200
