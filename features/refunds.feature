Feature: Refunds claw back the points a purchase earned
  A refund names the order, its own refund id and an amount (by default the rest of the
  order). Refunds of one order may never exceed its amount. Points are clawed back in
  proportion to the refunded share, counted cumulatively and rounded up, so that a full
  refund takes back exactly what was awarded: never a recomputation under today's rules.
  Points come from the purchase's own lot first, then the oldest other lots, and may take the
  available balance below zero; a member with a negative balance cannot redeem.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: A partial refund claws back points in proportion, rounded up
    When the storefront posts purchase "A-1" of "100.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 1        | 100.00     |
    Then the purchase earns 100 points and 50 bonus points
    When the storefront refunds "33.33" of order "A-1" as "RF-1"
    Then the response status is 201
    # ceil(150 x 33.33 / 100.00) = ceil(49.995) = 50
    And the refund claws back 50 points
    And "ann" has 0 available points and 100 pending
    And order "A-1" has "66.67" left to refund

  Scenario: Refunds in parts are counted cumulatively and take back exactly what was awarded
    When the storefront posts purchase "A-1" of "100.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 1        | 100.00     |
    And the storefront refunds "33.33" of order "A-1" as "RF-1"
    Then the refund claws back 50 points
    # after 66.66 refunded: ceil(150 x 66.66 / 100.00) = ceil(99.99) = 100 in all
    When the storefront refunds "33.33" of order "A-1" as "RF-2"
    Then the refund claws back 50 points
    When the storefront refunds the rest of order "A-1" as "RF-3"
    Then the refund is for "33.34" and claws back 50 points
    And "ann" has 0 available points and 0 pending
    And "ann" has 150 points clawed back
    And order "A-1" has "0.00" left to refund

  Scenario: A full refund takes back all the points, base and bonus
    When the storefront posts purchase "A-1" of "120.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 1        | 120.00     |
    And the storefront refunds the rest of order "A-1" as "RF-1"
    Then the response status is 201
    And the refund is for "120.00" and claws back 170 points
    And "ann" has 0 available points and 0 pending

  Scenario: Refunds of an order may never exceed its amount
    Given "ann" bought "A-1" for "120.00"
    When the storefront refunds "100.00" of order "A-1" as "RF-1"
    Then the response status is 201
    When the storefront refunds "20.01" of order "A-1" as "RF-2"
    Then the response status is 422 and the problem names the field "amount"
    And order "A-1" has "20.00" left to refund
    When the storefront refunds "20.00" of order "A-1" as "RF-3"
    Then the response status is 201
    When the storefront refunds "0.01" of order "A-1" as "RF-4"
    Then the response status is 422 and the problem names the field "amount"
    And "ann" has 0 available points and 0 pending

  Scenario: A refund larger than the order is refused and takes nothing back
    Given "ann" bought "A-1" for "120.00"
    When the storefront refunds "120.01" of order "A-1" as "RF-1"
    Then the response status is 422 and the problem names the field "amount"
    And "ann" has 0 available points and 120 pending
    And order "A-1" has "120.00" left to refund

  Scenario: A refund takes points from that purchase's own lot first
    Given "ann" bought "A-1" for "100.00"
    And 30 days pass
    And "ann" bought "A-2" for "100.00"
    And "ann" has 100 available points and 100 pending
    When the storefront refunds the rest of order "A-2" as "RF-1"
    Then the refund claws back 100 points
    And "ann" has 100 available points and 0 pending

  Scenario: When the purchase's own lot is short, the rest comes from the oldest other lots
    Given "ann" bought "A-1" for "100.00"
    And 10 days pass
    And "ann" bought "A-2" for "100.00"
    And 30 days pass
    And "ann" bought "A-3" for "100.00"
    And "ann" redeemed 50 points as "R-1"
    And "ann" has 150 available points and 100 pending
    # 50 left in the A-1 lot, then 50 from the A-2 lot (older than the A-3 lot)
    When the storefront refunds the rest of order "A-1" as "RF-1"
    Then the refund claws back 100 points
    And "ann" has 50 available points and 100 pending

  Scenario: A clawback may take the balance below zero, and then the member cannot redeem
    Given "ann" bought "A-1" for "100.00"
    And 30 days pass
    And "ann" redeemed 100 points as "R-1"
    When the storefront refunds the rest of order "A-1" as "RF-1"
    Then the refund claws back 100 points
    And "ann" has -100 available points and 0 pending
    When "ann" redeems 10 points as "R-2"
    Then the response status is 422 and the problem names the field "points"
    And "ann" has -100 available points and 0 pending

  Scenario: Points that become available later pay back a negative balance first
    Given "ann" bought "A-1" for "100.00"
    And 30 days pass
    And "ann" redeemed 100 points as "R-1"
    And the storefront refunded the rest of order "A-1" as "RF-1"
    And "ann" has -100 available points and 0 pending
    When the storefront posts purchase "A-2" of "300.00" for "ann"
    And 30 days pass and the scheduler runs
    Then "ann" has 200 available points and 0 pending

  Scenario: A refund claws back what was awarded, never a recomputation under today's rules
    Given "ann" bought "A-1" for "200.00"
    When the admin publishes a program version in which the "bronze" tier multiplies points by "2.0"
    Then the program in force is version 2
    When the storefront posts purchase "A-2" of "100.00" for "ann"
    Then the purchase earns 200 points and 0 bonus points
    When the storefront refunds the rest of order "A-1" as "RF-1"
    Then the refund claws back 200 points
    And "ann" has 0 available points and 200 pending

  Scenario: A refund of an order that was never recorded is refused
    When the storefront refunds "10.00" of order "NOPE-1" as "RF-1"
    Then the response status is 404
