Feature: Refund guarantees take the risk of a purchase off the customer
  A guarantee policy promises a refund if the customer is not satisfied, inside a window:
  satisfaction (100%, 30 days), trial-90 (100%, 90 days), plus-10 (110%, 60 days), double
  (200%, 30 days, evidence text required) and outcome-365 (100%, 365 days, evidence text
  required). A purchase names at most one policy, and records the policy's terms, so that a
  later program version never changes an existing promise. A claim names the order, its own
  claim id, and evidence where the policy requires it. One claim per purchase; a claim outside
  the window is rejected with the date the window closed. Payout = the order's amount still
  unrefunded x the refund percentage, rounded half-even to the currency's minor unit. The claim
  records GuaranteeClaimed and the refund, claws back all the purchase's remaining points,
  re-evaluates the tier and voids a referral that it qualified. Points of a guaranteed purchase
  stay pending until the guarantee window closes when it is longer than the return window.
  Finance sees the open guarantees and their maximum liability, claims and payouts per policy,
  and the claim rate. A member is told once, 7 days before (a program rule; 0 for never), that
  a guarantee still open is about to close.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario Outline: An unconditional guarantee pays the unrefunded amount x its percentage, half-even to the cent
    When the storefront posts purchase "A-1" of "<amount>" for "ann" under the "<policy>" guarantee
    Then the purchase carries the "<policy>" guarantee of <percent> percent until "<closes_at>"
    And "ann" has 0 available points and <points> pending
    When <days> days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 201
    And the claim pays out "<payout>" under the "<policy>" guarantee of <percent> percent on "<amount>"
    And the claim claws back <points> points
    And "ann" has 0 available points and 0 pending
    And order "A-1" has "0.00" left to refund
    And purchase "A-1" shows the claim "C-1" paying out "<payout>"
    And the ledger recorded "PurchaseRefunded" before "GuaranteeClaimed" for "ann"

    # plus-10: 110% of 10.05 = 11.055, the half cent goes to the even 11.06;
    # 110% of 10.15 = 11.165, the half cent goes to the even 11.16.
    Examples:
      | policy       | amount | percent | closes_at                 | days | payout | points |
      | satisfaction | 100.00 | 100     | 2026-02-04T09:00:00+00:00 | 29   | 100.00 | 100    |
      | trial-90     | 100.00 | 100     | 2026-04-05T09:00:00+00:00 | 89   | 100.00 | 100    |
      | plus-10      | 100.00 | 110     | 2026-03-06T09:00:00+00:00 | 59   | 110.00 | 100    |
      | plus-10      | 10.05  | 110     | 2026-03-06T09:00:00+00:00 | 59   | 11.06  | 10     |
      | plus-10      | 10.15  | 110     | 2026-03-06T09:00:00+00:00 | 1    | 11.16  | 10     |

  Scenario Outline: A policy that requires evidence text pays out only when the claim gives it
    When the storefront posts purchase "A-1" of "<amount>" for "ann" under the "<policy>" guarantee
    Then the purchase carries the "<policy>" guarantee of <percent> percent until "<closes_at>"
    When <days> days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 422 and the problem names the field "evidence"
    When the storefront claims the guarantee of order "A-1" as "C-2" with the evidence "   "
    Then the response status is 422 and the problem names the field "evidence"
    And the ledger recorded 0 "GuaranteeClaimed" events for "ann"
    And "ann" has 0 available points and <points> pending
    When the storefront claims the guarantee of order "A-1" as "C-3" with the evidence "<evidence>"
    Then the response status is 201
    And the claim pays out "<payout>" under the "<policy>" guarantee of <percent> percent on "<amount>"
    And the claim records the evidence "<evidence>"
    And "ann" has 0 available points and 0 pending

    # double: 200% of 33.33 = 66.66, exact; twice any amount in cents needs no rounding.
    Examples:
      | policy      | amount | percent | closes_at                 | days | evidence                     | payout | points |
      | double      | 40.00  | 200     | 2026-02-04T09:00:00+00:00 | 29   | the kettle leaks             | 80.00  | 40     |
      | double      | 33.33  | 200     | 2026-02-04T09:00:00+00:00 | 3    | it arrived broken            | 66.66  | 33     |
      | outcome-365 | 250.00 | 100     | 2027-01-05T09:00:00+00:00 | 364  | my income did not rise at all | 250.00 | 250    |

  Scenario Outline: A claim outside the window is rejected with the date the window closed
    When the storefront posts purchase "A-1" of "80.00" for "ann" under the "<policy>" guarantee
    And the storefront posts purchase "A-2" of "80.00" for "ann" under the "<policy>" guarantee
    And the clock reaches <last_second_inside>
    And the storefront claims the guarantee of order "A-1" as "C-1" with the evidence "not satisfied"
    Then the response status is 201
    And the claim pays out "<payout>" under the "<policy>" guarantee of <percent> percent on "80.00"
    When 1 second passes
    And the storefront claims the guarantee of order "A-2" as "C-2" with the evidence "not satisfied"
    Then the response status is 422 and the problem says the window closed at "<closes_at>"
    And the ledger recorded 1 "GuaranteeClaimed" event for "ann"
    And order "A-2" has "80.00" left to refund

    Examples:
      | policy       | percent | payout | last_second_inside        | closes_at                 |
      | satisfaction | 100     | 80.00  | 2026-02-04T08:59:59+00:00 | 2026-02-04T09:00:00+00:00 |
      | trial-90     | 100     | 80.00  | 2026-04-05T08:59:59+00:00 | 2026-04-05T09:00:00+00:00 |
      | plus-10      | 110     | 88.00  | 2026-03-06T08:59:59+00:00 | 2026-03-06T09:00:00+00:00 |
      | double       | 200     | 160.00 | 2026-02-04T08:59:59+00:00 | 2026-02-04T09:00:00+00:00 |
      | outcome-365  | 100     | 80.00  | 2027-01-05T08:59:59+00:00 | 2027-01-05T09:00:00+00:00 |

  Scenario: One claim per purchase: a second claim is a conflict, repeating the first returns it
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "plus-10" guarantee
    And 10 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1" with the evidence "too loud"
    Then the response status is 201
    And the claim pays out "110.00" under the "plus-10" guarantee of 110 percent on "100.00"
    When 1 day passes
    And the storefront claims the guarantee of order "A-1" as "C-2" with the evidence "too loud"
    Then the response status is 409 and the problem names the field "claim_id"
    When the storefront claims the guarantee of order "A-1" as "C-1" with the evidence "too quiet"
    Then the response status is 409 and the problem names the field "evidence"
    When the storefront claims the guarantee of order "A-1" as "C-1" with the evidence "too loud"
    Then the response status is 200
    And the response is the same as the first one
    And the ledger recorded 1 "GuaranteeClaimed" event for "ann"
    And the ledger recorded 1 "PurchaseRefunded" event for "ann"
    And purchase "A-1" shows the claim "C-1" paying out "110.00"
    And "ann" has 0 available points and 0 pending

  Scenario: Repeating a claim after its window closed still returns the first response
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And 29 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 201
    When 2 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 200
    And the response is the same as the first one
    And the ledger recorded 1 "GuaranteeClaimed" event for "ann"

  Scenario: Partial refunds before a claim reduce the payout to the amount still unrefunded
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "plus-10" guarantee
    And the storefront refunds "39.95" of order "A-1" as "RF-1"
    # ceil(100 x 39.95 / 100.00) = 40 points taken back by the refund
    Then the refund claws back 40 points
    When 20 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    # 110% of the 60.05 still unrefunded = 66.055, half-even to 66.06
    Then the claim pays out "66.06" under the "plus-10" guarantee of 110 percent on "60.05"
    # all the purchase's remaining points: 100 awarded - 40 already taken back
    And the claim claws back 60 points
    And "ann" has 0 available points and 0 pending
    And "ann" has 100 points clawed back
    And order "A-1" has "0.00" left to refund

  Scenario: A refund after a claim is refused, since the claim refunded the rest of the order
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 201
    When the storefront refunds "10.00" of order "A-1" as "RF-1"
    Then the response status is 422
    And the ledger recorded 1 "PurchaseRefunded" event for "ann"
    And order "A-1" has "0.00" left to refund
    And "ann" has 100 points clawed back

  Scenario: A claim on a purchase sold without a guarantee is refused
    Given "ann" bought "A-1" for "120.00"
    When the storefront claims the guarantee of order "A-1" as "C-1"
    Then the response status is 422
    And the problem says the order was sold without a guarantee
    And "ann" has 0 available points and 120 pending
    And order "A-1" has "120.00" left to refund
    And purchase "A-1" has no guarantee and no claim

  Scenario: A purchase naming a policy the program does not have is refused
    When the storefront posts purchase "A-1" of "120.00" for "ann" under the "lifetime" guarantee
    Then the response status is 422 and the problem names the field "guarantee"
    When the storefront posts purchase "A-1" of "120.00" for "ann" under the guarantees "satisfaction" and "double"
    Then the response status is 422 and the problem names the field "guarantee"
    And "ann" has 0 available points and 0 pending
    And the ledger recorded 0 "PurchaseRecorded" events for "ann"

  Scenario: A claim inside the window voids the referral that the purchase qualified
    Given member "bob" enrolled with the referral code of "ann"
    When the storefront posts purchase "B-1" of "60.00" for "bob" under the "trial-90" guarantee
    Then the referral of "bob" by "ann" is "qualified", worth 500 points to "ann" and 250 to "bob"
    And "ann" has 0 available points and 500 pending
    And "bob" has 0 available points and 310 pending
    # the 30-day return window has passed, but the referral waits for the 90-day guarantee
    When 60 days pass and the scheduler runs
    Then the referral of "bob" by "ann" is "qualified", worth 500 points to "ann" and 250 to "bob"
    When the storefront claims the guarantee of order "B-1" as "C-1"
    Then the claim pays out "60.00" under the "trial-90" guarantee of 100 percent on "60.00"
    And the referral of "bob" by "ann" is "voided"
    And "ann" has 0 available points and 0 pending
    And "ann" has 500 points clawed back
    And "bob" has 0 available points and 0 pending
    And "bob" has 310 points clawed back
    And the ledger recorded 1 "ReferralVoided" event for "ann"
    And the ledger recorded 1 "RefereeRewardVoided" event for "bob"

  Scenario: A claim re-evaluates the tier: the claimed purchase that caused an upgrade no longer counts
    Given "ann" bought "A-1" for "400.00"
    When the storefront posts purchase "A-2" of "150.00" for "ann" under the "satisfaction" guarantee
    Then the purchase moves "ann" up to "silver"
    When 10 days pass
    And the storefront claims the guarantee of order "A-2" as "C-1"
    Then the claim pays out "150.00" under the "satisfaction" guarantee of 100 percent on "150.00"
    And the claim moves "ann" down to "bronze"
    And "ann" holds the "bronze" tier with a qualifying spend of "400.00"
    And the ledger recorded a "TierDowngraded" event for "ann" with reason "refund"
    And "ann" has 0 available points and 400 pending

  Scenario Outline: Points stay pending until the guarantee window closes, when it is longer than the return window
    When the storefront posts purchase "A-1" of "120.00" for "ann" under the "<policy>" guarantee
    Then the purchase carries the "<policy>" guarantee of <percent> percent until "<closes_at>"
    And the purchase's points become available at "<available_at>"
    And "ann" has a pending lot of 120 points available at "<available_at>"

    Examples:
      | policy       | percent | closes_at                 | available_at              |
      | satisfaction | 100     | 2026-02-04T09:00:00+00:00 | 2026-02-04T09:00:00+00:00 |
      | double       | 200     | 2026-02-04T09:00:00+00:00 | 2026-02-04T09:00:00+00:00 |
      | plus-10      | 110     | 2026-03-06T09:00:00+00:00 | 2026-03-06T09:00:00+00:00 |
      | trial-90     | 100     | 2026-04-05T09:00:00+00:00 | 2026-04-05T09:00:00+00:00 |
      | outcome-365  | 100     | 2027-01-05T09:00:00+00:00 | 2027-01-05T09:00:00+00:00 |

  Scenario: Points of a trial-90 purchase are still pending after the return window and available after 90 days
    When the storefront posts purchase "A-1" of "120.00" for "ann" under the "trial-90" guarantee
    Then the response status is 201
    When 31 days pass and the scheduler runs
    Then "ann" has 0 available points and 120 pending
    When 58 days pass and the scheduler runs
    Then "ann" has 0 available points and 120 pending
    When 1 day passes and the scheduler runs
    Then "ann" has 120 available points and 0 pending
    And purchase "A-1" carries the "trial-90" guarantee of 100 percent until "2026-04-05T09:00:00+00:00"

  Scenario: The purchase and its read show the guarantee and when it expires, and later the claim
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "double" guarantee
    Then the response status is 201
    And the purchase carries the "double" guarantee of 200 percent until "2026-02-04T09:00:00+00:00"
    And purchase "A-1" carries the "double" guarantee of 200 percent until "2026-02-04T09:00:00+00:00"
    And purchase "A-1" has no claim yet
    When 5 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1" with the evidence "it broke"
    Then purchase "A-1" shows the claim "C-1" paying out "200.00"
    And purchase "A-1" carries the "double" guarantee of 200 percent until "2026-02-04T09:00:00+00:00"

  Scenario: A later program version never changes an existing purchase's promise
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And the storefront posts purchase "A-3" of "100.00" for "ann" under the "satisfaction" guarantee
    And the admin publishes a program version in which the "satisfaction" guarantee refunds 150 percent within 60 days
    Then the response status is 200
    And the program in force is version 2
    And purchase "A-1" carries the "satisfaction" guarantee of 100 percent until "2026-02-04T09:00:00+00:00"
    When the storefront posts purchase "A-2" of "100.00" for "ann" under the "satisfaction" guarantee
    Then the purchase carries the "satisfaction" guarantee of 150 percent until "2026-03-06T09:00:00+00:00"
    When 29 days pass
    And the storefront claims the guarantee of order "A-1" as "C-1"
    Then the claim pays out "100.00" under the "satisfaction" guarantee of 100 percent on "100.00"
    When 2 days pass
    And the storefront claims the guarantee of order "A-3" as "C-3"
    Then the response status is 422 and the problem says the window closed at "2026-02-04T09:00:00+00:00"
    When the storefront claims the guarantee of order "A-2" as "C-2"
    Then the claim pays out "150.00" under the "satisfaction" guarantee of 150 percent on "100.00"

  Scenario: Finance sees open guarantees, their maximum payout, claims, payouts and the claim rate
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And the storefront posts purchase "A-2" of "10.05" for "ann" under the "plus-10" guarantee
    And the storefront posts purchase "A-3" of "10.15" for "ann" under the "plus-10" guarantee
    And the storefront posts purchase "A-4" of "40.00" for "ann" under the "double" guarantee
    And the storefront posts purchase "A-5" of "200.00" for "ann" under the "trial-90" guarantee
    And the storefront posts purchase "A-6" of "50.00" for "ann"
    And the storefront refunds "20.00" of order "A-5" as "RF-1"
    # open: each unclaimed, unrefunded amount x its percentage, half-even:
    # 100.00 + (11.06 + 11.16) + 80.00 + 180.00 = 382.22
    Then the guarantee liability is:
      | policy       | guaranteed | open | max payout | claims | payouts | claim rate |
      | double       | 1          | 1    | 80.00      | 0      | 0.00    | 0.0        |
      | plus-10      | 2          | 2    | 22.22      | 0      | 0.00    | 0.0        |
      | satisfaction | 1          | 1    | 100.00     | 0      | 0.00    | 0.0        |
      | trial-90     | 1          | 1    | 180.00     | 0      | 0.00    | 0.0        |
      | all          | 5          | 5    | 382.22     | 0      | 0.00    | 0.0        |
    When 10 days pass
    And the storefront claims the guarantee of order "A-4" as "C-1" with the evidence "it broke"
    Then the claim pays out "80.00" under the "double" guarantee of 200 percent on "40.00"
    And the guarantee liability is:
      | policy       | guaranteed | open | max payout | claims | payouts | claim rate |
      | double       | 1          | 0    | 0.00       | 1      | 80.00   | 1.0        |
      | plus-10      | 2          | 2    | 22.22      | 0      | 0.00    | 0.0        |
      | satisfaction | 1          | 1    | 100.00     | 0      | 0.00    | 0.0        |
      | trial-90     | 1          | 1    | 180.00     | 0      | 0.00    | 0.0        |
      | all          | 5          | 4    | 302.22     | 1      | 80.00   | 0.2        |
    # the satisfaction window closes on 2026-02-04: that promise can no longer cost anything
    When 21 days pass
    Then the guarantee liability is:
      | policy       | guaranteed | open | max payout | claims | payouts | claim rate |
      | double       | 1          | 0    | 0.00       | 1      | 80.00   | 1.0        |
      | plus-10      | 2          | 2    | 22.22      | 0      | 0.00    | 0.0        |
      | satisfaction | 1          | 0    | 0.00       | 0      | 0.00    | 0.0        |
      | trial-90     | 1          | 1    | 180.00     | 0      | 0.00    | 0.0        |
      | all          | 5          | 3    | 202.22     | 1      | 80.00   | 0.2        |
    And the guarantee liability as of "2026-01-10T09:00:00+00:00" is:
      | policy       | guaranteed | open | max payout | claims | payouts | claim rate |
      | double       | 1          | 1    | 80.00      | 0      | 0.00    | 0.0        |
      | plus-10      | 2          | 2    | 22.22      | 0      | 0.00    | 0.0        |
      | satisfaction | 1          | 1    | 100.00     | 0      | 0.00    | 0.0        |
      | trial-90     | 1          | 1    | 180.00     | 0      | 0.00    | 0.0        |
      | all          | 5          | 5    | 382.22     | 0      | 0.00    | 0.0        |

  Scenario Outline: Only storefronts and admins claim a guarantee
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And the <caller> claims the guarantee of order "A-1" as "C-1"
    Then the response status is <status>
    And "ann" has 0 available points and <pending> pending
    And the ledger recorded <claims> "GuaranteeClaimed" events for "ann"

    Examples:
      | caller     | status | pending | claims |
      | storefront | 201    | 0       | 1      |
      | admin      | 201    | 0       | 1      |
      | auditor    | 403    | 100     | 0      |
      | member ann | 403    | 100     | 0      |

  Scenario: The guarantee liability is for auditors and admins only
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And these callers read the analytics summary:
      | caller           | expected status |
      | auditor          | 200             |
      | admin            | 200             |
      | storefront       | 403             |
      | member ann       | 403             |
      | anonymous caller | 401             |
    Then each caller gets its expected status
    And every caller who may read it finds 1 open guarantee

  Scenario: A member is told once, 7 days ahead, that an open guarantee is about to close
    When the storefront posts purchase "A-1" of "100.00" for "ann" under the "satisfaction" guarantee
    And the storefront posts purchase "A-2" of "100.00" for "ann" under the "satisfaction" guarantee
    And the storefront posts purchase "A-3" of "100.00" for "ann" under the "satisfaction" guarantee
    And 10 days pass
    And the storefront claims the guarantee of order "A-2" as "C-1"
    And the storefront refunds "100.00" of order "A-3" as "RF-1"
    # the windows close on 2026-02-04: the notice is due on 2026-01-28, for A-1 alone
    When 12 days pass and the scheduler runs
    Then the ledger recorded 0 "GuaranteeExpiring" events for "ann"
    When 1 day passes and the scheduler runs
    Then "ann" was told on "2026-01-28T09:00:00+00:00" that the "satisfaction" guarantee of order "A-1" closes at "2026-02-04T09:00:00+00:00"
    When 10 days pass and the scheduler runs
    Then the ledger recorded 1 "GuaranteeExpiring" event for "ann"
    And order "A-1" has "100.00" left to refund
