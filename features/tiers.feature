Feature: Tiers follow the qualifying spend of the trailing 365 days
  Tiers by qualifying spend (net of refunds) in the trailing 365 days: bronze 0, silver 500,
  gold 2,000, platinum 5,000. Upgrades happen at once, on the purchase that crosses the
  threshold. A tier is held for at least 365 days from the upgrade; at the review on that
  anniversary the member moves down at most one tier if the trailing spend no longer
  qualifies. A refund that removes the spend that caused the upgrade downgrades at once.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: A new member starts at bronze
    Then "ann" holds the "bronze" tier with a qualifying spend of "0.00"
    And "ann" needs "500.00" more for "silver"
    And "ann" has no tier review

  Scenario: The purchase that crosses a threshold upgrades the tier at once
    Given "ann" bought "A-1" for "499.99"
    And "ann" holds the "bronze" tier
    When the storefront posts purchase "A-2" of "0.01" for "ann"
    Then the purchase moves "ann" up to "silver"
    And "ann" holds the "silver" tier with a qualifying spend of "500.00"
    And "ann" needs "1500.00" more for "gold"
    And "ann" has a tier review on "2027-01-05T09:00:00+00:00"
    And the ledger recorded 1 "TierUpgraded" event for "ann"

  Scenario: A purchase that crosses several thresholds upgrades straight to the tier it reaches
    When the storefront posts purchase "A-1" of "5000.00" for "ann"
    Then the purchase moves "ann" up to "platinum"
    And the purchase earns 5000 points and 0 bonus points
    And "ann" holds the top tier

  Scenario: Status shows what the next tier needs, what keeping the tier needs, and the review date
    Given "ann" bought "A-1" for "600.00"
    And 100 days pass
    And "ann" bought "A-2" for "200.00"
    Then "ann" holds the "silver" tier with a qualifying spend of "800.00"
    And "ann" needs "1200.00" more for "gold"
    # at the review A-1 is 365 days old and no longer counts; A-2 does
    And "ann" needs "300.00" to keep the tier at the review on "2027-01-05T09:00:00+00:00"

  Scenario: A tier is held for 365 days from the upgrade even when the trailing spend no longer qualifies
    Given "ann" bought "A-1" for "300.00"
    And 100 days pass
    And "ann" bought "A-2" for "300.00"
    And "ann" holds the "silver" tier
    # day 400: A-1 has left the trailing 365 days, the grace runs until day 465
    When 300 days pass and the scheduler runs
    Then "ann" holds the "silver" tier with a qualifying spend of "300.00"
    And "ann" has a tier review on "2027-04-15T09:00:00+00:00"
    When 64 days pass and the scheduler runs
    Then "ann" holds the "silver" tier
    When 1 day passes and the scheduler runs
    Then "ann" holds the "bronze" tier
    And the ledger recorded a "TierDowngraded" event for "ann" with reason "review"

  Scenario: At the review a member moves down at most one tier
    Given "ann" bought "A-1" for "5000.00"
    And "ann" holds the "platinum" tier
    When 365 days pass and the scheduler runs
    Then "ann" holds the "gold" tier with a qualifying spend of "0.00"
    And "ann" has a tier review on "2028-01-05T09:00:00+00:00"
    When 365 days pass and the scheduler runs
    Then "ann" holds the "silver" tier
    And the ledger recorded 2 "TierDowngraded" events for "ann"

  Scenario: A member whose trailing spend still qualifies keeps the tier at the review
    Given "ann" bought "A-1" for "500.00"
    And 200 days pass
    And "ann" bought "A-2" for "500.00"
    When 165 days pass and the scheduler runs
    Then "ann" holds the "silver" tier with a qualifying spend of "500.00"
    And "ann" has a tier review on "2028-01-05T09:00:00+00:00"
    And the ledger recorded 0 "TierDowngraded" events for "ann"

  Scenario: The tier review happens even if the scheduler has not run
    Given "ann" bought "A-1" for "600.00"
    When 366 days pass
    Then "ann" holds the "bronze" tier

  Scenario: A refund that removes the spend that caused the upgrade downgrades at once
    Given "ann" bought "A-1" for "300.00"
    And "ann" bought "A-2" for "300.00"
    And "ann" holds the "silver" tier
    When the storefront refunds "150.00" of order "A-2" as "RF-1"
    Then the refund moves "ann" down to "bronze"
    And "ann" holds the "bronze" tier with a qualifying spend of "450.00"
    And "ann" has no tier review
    And the ledger recorded a "TierDowngraded" event for "ann" with reason "refund"

  Scenario: A refund of spend that did not cause the upgrade leaves the tier to its review
    Given "ann" bought "A-1" for "300.00"
    And 100 days pass
    And "ann" bought "A-2" for "300.00"
    And "ann" holds the "silver" tier
    # day 400: A-1 has left the trailing 365 days; A-3 comes after the upgrade
    And 300 days pass
    And "ann" bought "A-3" for "100.00"
    When the storefront refunds the rest of order "A-3" as "RF-1"
    Then the refund leaves "ann" at "silver"
    And "ann" holds the "silver" tier with a qualifying spend of "300.00"
    And "ann" has a tier review on "2027-04-15T09:00:00+00:00"

  Scenario: A refund that leaves the spend behind the upgrade above the threshold keeps the tier
    Given "ann" bought "A-1" for "300.00"
    And 100 days pass
    And "ann" bought "A-2" for "300.00"
    And "ann" holds the "silver" tier
    # day 400: A-1 has aged out, which the grace covers; the upgrade still had 599.00 behind it
    And 300 days pass
    When the storefront refunds "1.00" of order "A-2" as "RF-1"
    Then the refund leaves "ann" at "silver"
    And "ann" holds the "silver" tier with a qualifying spend of "299.00"
    And "ann" has a tier review on "2027-04-15T09:00:00+00:00"

  Scenario: A refund downgrade lands on the tier the remaining spend still qualifies for
    Given "ann" bought "A-1" for "2500.00"
    And "ann" holds the "gold" tier
    When the storefront refunds "1000.00" of order "A-1" as "RF-1"
    Then the refund moves "ann" down to "silver"
    And "ann" holds the "silver" tier with a qualifying spend of "1500.00"

  Scenario: A refund that leaves the spend at or above the threshold keeps the tier
    Given "ann" bought "A-1" for "600.00"
    And "ann" holds the "silver" tier
    When the storefront refunds "100.00" of order "A-1" as "RF-1"
    Then the refund leaves "ann" at "silver"
    And "ann" holds the "silver" tier with a qualifying spend of "500.00"
    And the ledger recorded 0 "TierDowngraded" events for "ann"
