Feature: Outbound events (webhooks)
  A shop's own systems react to the ledger: its email tool greets a member who reached silver,
  its CRM logs every purchase. An operator subscribes an endpoint to event types and gets a
  secret, shown once. Every ledger change a subscribed type covers is delivered to the endpoint
  as a signed message (Standard Webhooks: headers webhook-id, webhook-timestamp and
  webhook-signature; body type, timestamp and data), at least once, and the same ledger event
  always carries the same webhook-id, so a receiver can tell a repeat. A delivery that does not
  get a 2xx is tried again with backoff (about immediately, 5 s, 5 min, 30 min, ...); an
  endpoint that answers 410 Gone is disabled at once. One member's events reach one endpoint in
  the order they were recorded, and a slow endpoint holds up only itself.

  Here the shop's receivers are small servers on loopback, which the server allows only when it
  is told to (DAIFUKU_WEBHOOKS_ALLOW_PRIVATE=1). Every message a receiver gets is checked with
  the Standard Webhooks library and the secret the subscription was given.

  Background:
    Given the program's defaults
    And it is 2026-03-02T09:00:00+00:00
    And the server allows endpoints on loopback

  Scenario: A purchase that upgrades a member delivers the purchase, then the upgrade, signed
    Given member "ann" is enrolled
    And the admin subscribed "crm" to "purchase.recorded, tier.upgraded"
    When the storefront posts purchase "A-1" of "600.00" for "ann"
    And the dispatcher delivers
    # bronze x1.0: 600 points; 600.00 >= 500.00: silver at once
    Then "crm" received these messages, in this order, each signed with its secret:
      | type              | member_id | order_id | amount | points | from_tier | to_tier |
      | purchase.recorded | ann       | A-1      | 600.00 | 600    |           |         |
      | tier.upgraded     | ann       | A-1      |        |        | bronze    | silver  |
    And each message to "crm" names the position of its event in the log, and its actor the storefront's key
    And each message to "crm" has a webhook-id of its own

  Scenario: A delivery that fails is tried again, with the same webhook-id, until a 2xx
    Given the admin subscribed "crm" to "member.enrolled"
    And "crm" answers 500, 500, then 200
    And member "ann" is enrolled
    When the dispatcher delivers
    Then "crm" received 1 message
    # the first retry waits 5 seconds, give or take a tenth; the second 5 minutes
    When 4 seconds pass
    And the dispatcher delivers
    Then "crm" received 1 message
    When 2 seconds pass
    And the dispatcher delivers
    Then "crm" received 2 messages
    When 330 seconds pass
    And the dispatcher delivers
    Then "crm" received the same message 3 times, each signed with its secret
    And the auditor finds 1 delivery to "crm", "delivered", its attempts answered 500, 500, 200

  Scenario: An endpoint that answers 410 is disabled at once; enabled again, it gets what waited
    Given the admin subscribed "crm" to "*"
    And "crm" answers 410, then 200
    And member "ann" is enrolled
    When the dispatcher delivers
    Then "crm" received 1 message
    And the subscription of "crm" is disabled because "the endpoint answered 410 Gone"
    When the storefront posts purchase "A-1" of "20.00" for "ann"
    And the dispatcher delivers
    Then "crm" received 1 message
    When the admin enables the subscription of "crm" again
    And the dispatcher delivers
    Then "crm" received these messages, in this order, each signed with its secret:
      | type              | member_id | order_id |
      | member.enrolled   | ann       |          |
      | member.enrolled   | ann       |          |
      | purchase.recorded | ann       | A-1      |
    And the subscription of "crm" is enabled

  Scenario: After a rotation both secrets sign for 24 hours, then only the new one
    Given the admin subscribed "crm" to "member.enrolled"
    And member "ann" is enrolled
    And the dispatcher delivered 1 message to "crm"
    When the admin rotates the secret of "crm"
    Then the old secret of "crm" signs until 2026-03-03T09:00:00+00:00
    When the storefront enrols "bob" with the email "bob@example.com"
    And the dispatcher delivers
    Then the last message to "crm" is signed twice, and verifies with the old secret and with the new one
    When 86400 seconds pass
    And the storefront enrols "cid" with the email "cid@example.com"
    And the dispatcher delivers
    Then the last message to "crm" verifies with the new secret only

  Scenario: A replay delivers again, with the same webhook-ids, everything after a position or since an instant
    Given the admin subscribed "crm" to "member.enrolled"
    And member "ann" is enrolled
    And 3600 seconds pass
    And member "bob" is enrolled
    And 3600 seconds pass
    And member "cid" is enrolled
    And the dispatcher delivered 3 messages to "crm"
    When the admin asks for a replay of "crm" after the position of the enrolment of "ann"
    Then the response status is 202
    When the dispatcher delivers
    Then "crm" received these messages, each member's in this order, each signed with its secret:
      | type            | member_id |
      | member.enrolled | ann       |
      | member.enrolled | bob       |
      | member.enrolled | cid       |
      | member.enrolled | bob       |
      | member.enrolled | cid       |
    And every message to "crm" about the same member carries the same webhook-id
    When the admin asks for a replay of "crm" since 2026-03-02T11:00:00+00:00
    Then the response status is 202
    When the dispatcher delivers
    Then "crm" received 6 messages
    And the last message to "crm" is about "cid"

  Scenario Outline: A subscription to types that cannot be is refused, and nothing is subscribed
    When the admin subscribes "crm" to "<types>"
    Then the response status is 422 and the problem names the field "types"
    And there are no subscriptions

    Examples:
      | types                  |
      | purchase.made          |
      |                        |
      | *, member.enrolled     |

  Scenario Outline: An endpoint that is not public https is refused unless private endpoints are allowed
    Given the server allows only public https endpoints
    When the admin subscribes the url "<url>" to "member.enrolled"
    Then the response status is 422 and the problem names the field "url"
    And there are no subscriptions

    Examples:
      | url                            |
      | http://shop.example.com/hooks  |
      | https://127.0.0.1/hooks        |
      | https://10.1.2.3/hooks         |
      | https://[::1]/hooks            |

  Scenario: Requests about an unknown subscription, or a replay beyond the log, change nothing
    Given the admin subscribed "crm" to "member.enrolled"
    And member "ann" is enrolled
    When the admin reads the subscription "0b7c9d3e-5f1a-4c2b-9e8d-7a6b5c4d3e2f"
    Then the response status is 404 and the problem is "unknown-webhook"
    When the admin rotates the secret of the subscription "0b7c9d3e-5f1a-4c2b-9e8d-7a6b5c4d3e2f"
    Then the response status is 404 and the problem is "unknown-webhook"
    When the admin asks for a replay of "crm" after a position beyond the last in the log
    Then the response status is 422 and the problem names the field "after"
    When the admin changes the types of "crm" to "purchase.made"
    Then the response status is 422 and the problem names the field "types"
    And nothing was recorded after the enrolment of "ann"

  Scenario: History brought in by an import is sent only to the subscriptions that ask for it
    Given the admin subscribed "crm" to "*"
    And the admin subscribed "archive" to "*" with imports included
    When the storefront imports these records:
      | kind     | id  | of  | at                        | amount |
      | member   | dan |     | 2025-05-01T12:00:00+00:00 |        |
      | purchase | D-1 | dan | 2025-05-02T12:00:00+00:00 | 80.00  |
    And the storefront enrols "ann" with the email "ann@example.com"
    And the dispatcher delivers
    Then "crm" received these messages, in this order, each signed with its secret:
      | type            | member_id |
      | member.enrolled | ann       |
    And "archive" received these messages, each member's in this order, each signed with its secret:
      | type              | member_id | order_id |
      | member.enrolled   | dan       |          |
      | purchase.recorded | dan       | D-1      |
      | member.enrolled   | ann       |          |

  Scenario: A slow endpoint holds up only itself
    Given the admin subscribed "crm" to "member.enrolled"
    And the admin subscribed "helpdesk" to "member.enrolled"
    And "helpdesk" takes 2 seconds over each answer
    And member "ann" is enrolled
    And member "bob" is enrolled
    And member "cid" is enrolled
    When the dispatcher delivers for 1 second
    Then "crm" received 3 messages
    And no delivery to "helpdesk" has been answered yet
    When the dispatcher delivers
    Then the auditor finds 3 deliveries to "helpdesk", "delivered"

  Scenario: One member's events reach an endpoint in order, even while an earlier one is retried
    Given the admin subscribed "crm" to "member.enrolled, purchase.recorded"
    And "crm" answers 500, then 200
    And member "ann" is enrolled
    And "ann" bought "A-1" for "20.00"
    When the dispatcher delivers
    And the storefront enrols "bob" with the email "bob@example.com"
    And the dispatcher delivers
    # ann's purchase waits for her enrolment, which waits for its retry; bob's does not wait
    Then "crm" received these messages, in this order, each signed with its secret:
      | type            | member_id |
      | member.enrolled | ann       |
      | member.enrolled | bob       |
    When 6 seconds pass
    And the dispatcher delivers
    Then "crm" received these messages, in this order, each signed with its secret:
      | type              | member_id | order_id |
      | member.enrolled   | ann       |          |
      | member.enrolled   | bob       |          |
      | member.enrolled   | ann       |          |
      | purchase.recorded | ann       | A-1      |
