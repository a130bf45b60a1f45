Feature: Point lots become available after the return window and expire two years later
  Points are pending until the purchase's return window ends (30 days, or the guarantee
  window when longer), then available. Each purchase's points live in their own lot, which
  expires 730 days after it became available. Redemptions spend the oldest lots first. A
  scheduler records these time-driven changes, but before any other change to a member
  everything due is recorded first, so nothing depends on when the scheduler last ran.
  A member is told once, 30 days before (a program rule; 0 for never), that a lot's points
  are about to expire, if the lot still holds any then, so the shop can remind them.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: Points are pending until the 30-day return window ends, then available
    When the storefront posts purchase "A-1" of "120.00" for "ann"
    Then "ann" has 0 available points and 120 pending
    And "ann" has a pending lot of 120 points available at "2026-02-04T09:00:00+00:00"
    When 29 days pass and the scheduler runs
    Then "ann" has 0 available points and 120 pending
    When 1 day passes and the scheduler runs
    Then "ann" has 120 available points and 0 pending
    And the ledger recorded 1 "PointsBecameAvailable" event for "ann"

  Scenario: A guarantee window longer than the return window keeps the points pending longer
    When the storefront posts purchase "A-1" of "120.00" for "ann" under the "trial-90" guarantee
    Then the response status is 201
    And "ann" has a pending lot of 120 points available at "2026-04-05T09:00:00+00:00"
    When 89 days pass and the scheduler runs
    Then "ann" has 0 available points and 120 pending
    When 1 day passes and the scheduler runs
    Then "ann" has 120 available points and 0 pending

  Scenario: Each purchase has its own lot with its own date
    Given "ann" bought "A-1" for "120.00"
    And 10 days pass
    And "ann" bought "A-2" for "80.00"
    Then "ann" has these pending lots:
      | points | available_at              |
      | 120    | 2026-02-04T09:00:00+00:00 |
      | 80     | 2026-02-14T09:00:00+00:00 |
    When 20 days pass and the scheduler runs
    Then "ann" has 120 available points and 80 pending

  Scenario: Before a change is recorded, every time-driven change due is recorded first
    Given "ann" bought "A-1" for "120.00"
    When 31 days pass
    Then "ann" has 120 available points and 0 pending
    When "ann" redeems 100 points as "R-1"
    Then the response status is 201
    And "ann" has 20 available points and 0 pending
    And the ledger recorded "PointsBecameAvailable" before "PointsRedeemed" for "ann"

  Scenario: Points expire 730 days after they became available
    Given "ann" bought "A-1" for "120.00"
    When 30 days pass and the scheduler runs
    Then "ann" has 120 available points and 0 pending
    # available on 2026-02-04, so they expire on 2028-02-04
    When 729 days pass and the scheduler runs
    Then "ann" has 120 available points and 0 pending
    And "ann" has 0 expired points
    When 1 day passes and the scheduler runs
    Then "ann" has 0 available points and 0 pending
    And "ann" has 120 expired points
    And the ledger recorded 1 "PointsExpired" event for "ann"

  Scenario: Redemptions spend the oldest lots first
    Given "ann" bought "A-1" for "100.00"
    And 10 days pass
    And "ann" bought "A-2" for "200.00"
    When 30 days pass and the scheduler runs
    Then "ann" has 300 available points and 0 pending
    # 100 from the A-1 lot (the oldest), then 50 from the A-2 lot
    When "ann" redeems 150 points as "R-1"
    Then "ann" has 150 available points and 0 pending
    # the A-1 lot expires on day 760, the A-2 lot on day 770
    When 720 days pass and the scheduler runs
    Then "ann" has 150 available points and 0 pending
    And "ann" has 0 expired points
    When 10 days pass and the scheduler runs
    Then "ann" has 0 available points and 0 pending
    And "ann" has 150 expired points

  Scenario: A late-arriving order keeps its date for reporting but takes effect at the member's latest time
    Given 2 days pass
    And "ann" bought "A-1" for "50.00"
    When 1 day passes
    And the storefront posts purchase "A-2" of "80.00" for "ann" dated "2026-01-06T09:00:00+00:00"
    Then the response status is 201
    And purchase "A-2" is dated "2026-01-06T09:00:00+00:00" and takes effect at "2026-01-07T09:00:00+00:00"
    And "ann" has a pending lot of 80 points available at "2026-02-06T09:00:00+00:00"

  Scenario: The scheduler records overdue changes in the order they fell due
    Given "ann" bought "A-1" for "600.00"
    And "ann" holds the "silver" tier
    When 800 days pass and the scheduler runs
    Then the ledger recorded these changes for "ann", in this order:
      | change                | at                        |
      | PointsBecameAvailable | 2026-02-04T09:00:00+00:00 |
      | TierDowngraded        | 2027-01-05T09:00:00+00:00 |
      | PointsExpiring        | 2028-01-05T09:00:00+00:00 |
      | PointsExpired         | 2028-02-04T09:00:00+00:00 |
    And "ann" holds the "bronze" tier
    And "ann" has 0 available points and 0 pending
    And "ann" has 600 expired points

  Scenario: A member is told once, 30 days ahead, that a lot's points are about to expire
    Given "ann" bought "A-1" for "120.00"
    And 30 days pass
    When "ann" redeems 20 points as "R-1"
    # available on 2026-02-04, so the lot expires on 2028-02-04: the notice is due on 2028-01-05
    And 699 days pass and the scheduler runs
    Then the ledger recorded 0 "PointsExpiring" events for "ann"
    When 1 day passes and the scheduler runs
    Then "ann" was told on "2028-01-05T09:00:00+00:00" that 100 points of the "A-1" lot expire at "2028-02-04T09:00:00+00:00"
    And "ann" has 100 available points and 0 pending
    When 29 days pass and the scheduler runs
    Then the ledger recorded 1 "PointsExpiring" event for "ann"
    When 1 day passes and the scheduler runs
    Then "ann" has 100 expired points
    And the ledger recorded "PointsExpiring" before "PointsExpired" for "ann"

  Scenario: A lot spent before its notice is due is not noticed, and 0 days means no notice
    Given "ann" bought "A-1" for "100.00"
    And "ann" bought "A-2" for "50.00"
    And 31 days pass
    When "ann" redeems 100 points as "R-1"
    And the admin publishes a program version in which members are told 0 days before their points expire
    Then the response status is 200
    When 800 days pass and the scheduler runs
    Then "ann" has 50 expired points
    And the ledger recorded 0 "PointsExpiring" events for "ann"
