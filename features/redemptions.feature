Feature: Members redeem available points
  A member redeems available points for a reward from the program's catalogue, or for a plain
  number of points, under its own redemption id. Only available points can be spent; asking
  for more is an error. A storefront may cancel a redemption: the points come back as a new
  lot that keeps the original expiry.

  The default catalogue: "coffee" 500 points, "voucher-10" 1000 points, "free-shipping" 300.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled
    And "ann" bought "A-1" for "1200.00"
    And 30 days pass and the scheduler runs
    And "ann" has 1200 available points and 0 pending

  Scenario: A member redeems points for a reward from the catalogue
    When "ann" redeems the reward "coffee" as "R-1"
    Then the response status is 201
    And the redemption spends 500 points
    And "ann" has 700 available points and 0 pending
    And "ann" has 500 points redeemed

  Scenario: A member redeems a plain number of points
    When "ann" redeems 250 points as "R-1"
    Then the response status is 201
    And the redemption spends 250 points
    And "ann" has 950 available points and 0 pending

  Scenario: A storefront redeems on the member's behalf
    When the storefront redeems 300 points for "ann" as "R-1"
    Then the response status is 201
    And "ann" has 900 available points and 0 pending

  Scenario: A member may spend every available point
    When "ann" redeems 1200 points as "R-1"
    Then the response status is 201
    And "ann" has 0 available points and 0 pending

  Scenario: Asking for more than the available points is refused
    When "ann" redeems 1201 points as "R-1"
    Then the response status is 422 and the problem names the field "points"
    And "ann" has 1200 available points and 0 pending
    And "ann" has 0 points redeemed

  Scenario: Pending points cannot be spent
    # "ann" is silver since A-1, so A-2 earns floor(100 x 1.25) = 125 pending points
    Given "ann" bought "A-2" for "100.00"
    And "ann" has 1200 available points and 125 pending
    When "ann" redeems 1250 points as "R-1"
    Then the response status is 422 and the problem names the field "points"
    And "ann" has 1200 available points and 125 pending

  Scenario: A reward that is not in the catalogue is refused
    When "ann" redeems the reward "yacht" as "R-1"
    Then the response status is 422 and the problem names the field "reward"
    And "ann" has 1200 available points and 0 pending

  Scenario: A redemption names either a reward or a number of points
    When "ann" redeems nothing as "R-1"
    Then the response status is 422
    And "ann" has 1200 available points and 0 pending

  Scenario: A storefront cancels a redemption and the points come back
    Given "ann" redeemed the reward "voucher-10" as "R-1"
    And "ann" has 200 available points and 0 pending
    When the storefront cancels redemption "R-1"
    Then the response status is 201
    And "ann" has 1200 available points and 0 pending
    And "ann" has 0 points redeemed

  Scenario: Points given back by a cancellation keep their original expiry
    Given "ann" redeemed the reward "voucher-10" as "R-1"
    And 70 days pass
    When the storefront cancels redemption "R-1"
    # the A-1 lot became available on 2026-02-04 and expires on 2028-02-04 (day 760)
    And 659 days pass and the scheduler runs
    Then "ann" has 1200 available points and 0 pending
    When 1 day passes and the scheduler runs
    Then "ann" has 0 available points and 0 pending
    And "ann" has 1200 expired points

  Scenario: Points given back after their original expiry expire at once
    Given "ann" redeemed the reward "voucher-10" as "R-1"
    # the A-1 lot expires on day 760; the remaining 200 points expire with it
    And 740 days pass and the scheduler runs
    And "ann" has 0 available points and 0 pending
    When the storefront cancels redemption "R-1"
    Then the response status is 201
    And "ann" has 0 available points and 0 pending
    And "ann" has 1200 expired points
    And "ann" has 0 points redeemed

  Scenario: A cancellation of a redemption that was never made is refused
    When the storefront cancels redemption "R-404"
    Then the response status is 404
