Feature: Repeating a request with the same id changes nothing
  Every request that creates something carries its own id (member id, order id, refund id,
  redemption id). Repeating it with the same content returns the first response with status
  200 and changes nothing; the same id with different content is a conflict (409). The
  scheduler, too, records each time-driven change once, however often it runs.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: Enrolling the same member again with the same details returns the member
    When the storefront enrols "ann" with the email "ann@example.com"
    Then the response status is 200
    And the response shows member "ann" with the email "ann@example.com"

  Scenario: Enrolling the same member id with a different email is a conflict
    When the storefront enrols "ann" with the email "someone.else@example.com"
    Then the response status is 409 and the problem names the field "email"
    And "ann" is enrolled with the email "ann@example.com"

  Scenario: Repeating a purchase returns the first response and earns nothing more
    When the storefront posts purchase "A-1" of "120.00" for "ann"
    Then the response status is 201
    When the storefront posts purchase "A-1" of "120.00" for "ann"
    Then the response status is 200
    And the response is the same as the first one
    And "ann" has 0 available points and 120 pending
    And the ledger recorded 1 "PurchaseRecorded" event for "ann"

  Scenario: Repeating a purchase after the member changed tier still returns the first response
    When the storefront posts purchase "A-1" of "600.00" for "ann"
    Then the purchase moves "ann" up to "silver"
    When the storefront posts purchase "A-2" of "100.00" for "ann"
    And the storefront posts purchase "A-1" of "600.00" for "ann"
    Then the response status is 200
    And the purchase earns 600 points and 0 bonus points
    And the purchase moves "ann" up to "silver"
    And "ann" has 0 available points and 725 pending

  Scenario: The same order id with a different amount is a conflict
    Given "ann" bought "A-1" for "120.00"
    When the storefront posts purchase "A-1" of "130.00" for "ann"
    Then the response status is 409
    And "ann" has 0 available points and 120 pending

  Scenario: An order id is unique across the whole program
    Given member "bob" is enrolled
    And "ann" bought "A-1" for "120.00"
    When the storefront posts purchase "A-1" of "120.00" for "bob"
    Then the response status is 409
    And "bob" has 0 available points and 0 pending
    And "ann" has 0 available points and 120 pending

  Scenario: Repeating a refund takes the points back only once
    Given "ann" bought "A-1" for "120.00"
    When the storefront refunds "60.00" of order "A-1" as "RF-1"
    Then the response status is 201
    When the storefront refunds "60.00" of order "A-1" as "RF-1"
    Then the response status is 200
    And the response is the same as the first one
    And "ann" has 0 available points and 60 pending
    And order "A-1" has "60.00" left to refund

  Scenario: Repeating a refund after a later refund still returns the first response
    Given "ann" bought "A-1" for "120.00"
    When the storefront refunds "60.00" of order "A-1" as "RF-1"
    Then the response status is 201
    When the storefront refunds "30.00" of order "A-1" as "RF-2"
    And the storefront refunds "60.00" of order "A-1" as "RF-1"
    Then the response status is 200
    And the response is the same as the first one
    And order "A-1" has "30.00" left to refund

  Scenario: Repeating a refund of the rest of an order refunds it once
    Given "ann" bought "A-1" for "120.00"
    When the storefront refunds the rest of order "A-1" as "RF-1"
    And the storefront refunds the rest of order "A-1" as "RF-1"
    Then the response status is 200
    And the refund is for "120.00" and claws back 120 points
    And "ann" has 0 available points and 0 pending

  Scenario: The same refund id with a different amount is a conflict
    Given "ann" bought "A-1" for "120.00"
    And the storefront refunded "60.00" of order "A-1" as "RF-1"
    When the storefront refunds "30.00" of order "A-1" as "RF-1"
    Then the response status is 409
    And "ann" has 0 available points and 60 pending
    And order "A-1" has "60.00" left to refund

  Scenario: Repeating a redemption spends the points only once
    Given "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs
    When "ann" redeems 100 points as "R-1"
    Then the response status is 201
    When "ann" redeems 100 points as "R-1"
    Then the response status is 200
    And the redemption spends 100 points
    And "ann" has 20 available points and 0 pending

  Scenario: Repeating a redemption after another redemption still returns the first response
    Given "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs
    When "ann" redeems 100 points as "R-1"
    Then the response status is 201
    When "ann" redeems 10 points as "R-2"
    And "ann" redeems 100 points as "R-1"
    Then the response status is 200
    And the response is the same as the first one
    And "ann" has 10 available points and 0 pending

  Scenario: A redemption id is unique across the whole program
    Given member "bob" is enrolled
    And "ann" bought "A-1" for "120.00"
    And "bob" bought "B-1" for "120.00"
    And 30 days pass and the scheduler runs
    And "ann" redeemed 100 points as "R-1"
    When "bob" redeems 100 points as "R-1"
    Then the response status is 409
    And "bob" has 120 available points and 0 pending

  Scenario: The same redemption id for a different number of points is a conflict
    Given "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs
    And "ann" redeemed 100 points as "R-1"
    When "ann" redeems 10 points as "R-1"
    Then the response status is 409
    And "ann" has 20 available points and 0 pending

  Scenario: Cancelling a redemption twice gives the points back once
    Given "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs
    And "ann" redeemed 100 points as "R-1"
    When the storefront cancels redemption "R-1"
    Then the response status is 201
    When the storefront cancels redemption "R-1"
    Then the response status is 200
    And "ann" has 120 available points and 0 pending

  Scenario: Running the scheduler again records nothing twice
    Given "ann" bought "A-1" for "120.00"
    When 30 days pass and the scheduler runs
    And the scheduler runs again
    Then the scheduler recorded nothing
    And "ann" has 120 available points and 0 pending
    And the ledger recorded 1 "PointsBecameAvailable" event for "ann"
