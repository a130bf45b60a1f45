Feature: Referrals reward both the member who shares a code and the friend who enrols with it
  Every member gets a referral code at enrolment. A new member may enrol with a referrer's
  code: the referral is registered, qualified by the friend's first purchase with a net amount
  of at least 50.00, and rewarded when that purchase's return window has passed, or voided
  when the purchase is refunded in full inside the window (or so far that it no longer reaches
  50.00). The reward is two-sided: 500 points for the referrer and 250 for the friend, both as
  pending lots that become available when the referral is rewarded. Nobody may refer
  themselves (same email, lower-cased and without its +tag), a code that does not exist is
  rejected, a friend is referred once, and a referrer earns at most 20 referral rewards per
  365 days: further qualifying friends are recorded as capped, with no reward for either.
  A referral keeps the terms of the program version in force when it was registered.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: The program shows the referral rules in force
    Then the program in force has these referral rules:
      | referrer_points | referee_points | qualifying_amount | cap | cap_days |
      | 500             | 250            | 50.00             | 20  | 365      |

  Scenario: A friend's first purchase of 50.00 or more qualifies the referral; both rewards become available when its return window has passed
    When the storefront enrols "bob" with the email "bob@example.com" and the referral code of "ann"
    Then the response status is 201
    And "ann" has a "registered" referral of "bob"
    And "ann" has 0 available points and 0 pending
    And "bob" has 0 available points and 0 pending
    When the storefront posts purchase "B-1" of "80.00" for "bob"
    Then the purchase earns 80 points and 0 bonus points
    And the referrals of "ann" are:
      | referee | state     | qualifying order | referrer points | referee points | reward available at       |
      | bob     | qualified | B-1              | 500             | 250            | 2026-02-04T09:00:00+00:00 |
    # ann: the referrer's 500 in her own ledger, pending until B-1's window ends
    And "ann" has a pending lot of 500 points available at "2026-02-04T09:00:00+00:00"
    And "ann" has 0 available points and 500 pending
    # bob: 80 for the purchase and 250 for enrolling with the code, 330 in all
    And "bob" has these pending lots:
      | points | available_at              |
      | 80     | 2026-02-04T09:00:00+00:00 |
      | 250    | 2026-02-04T09:00:00+00:00 |
    And "bob" has 0 available points and 330 pending
    When 29 days pass and the scheduler runs
    Then "ann" has a "qualified" referral of "bob"
    And "ann" has 0 available points and 500 pending
    And "bob" has 0 available points and 330 pending
    # What a member sees never depends on when the scheduler last ran.
    When 1 day passes
    Then "ann" has a "rewarded" referral of "bob"
    And "ann" has 500 available points and 0 pending
    And "bob" has 330 available points and 0 pending
    When the scheduler runs again
    Then "ann" has a "rewarded" referral of "bob"
    And "ann" has 500 available points and 0 pending
    And "bob" has 330 available points and 0 pending
    And the referral of "bob" by "ann" records these causes:
      | step       | cause                                          |
      | registered | the enrolment of "bob"                         |
      | qualified  | purchase "B-1"                                 |
      | rewarded   | the scheduler run at 2026-02-04T09:00:00+00:00 |
    And the ledger recorded these changes for "ann", in this order:
      | change                | at                        |
      | ReferralRegistered    | 2026-01-05T09:00:00+00:00 |
      | ReferralQualified     | 2026-01-05T09:00:00+00:00 |
      | PointsBecameAvailable | 2026-02-04T09:00:00+00:00 |
      | ReferralRewarded      | 2026-02-04T09:00:00+00:00 |
    And the ledger recorded these changes for "bob", in this order:
      | change                | at                        |
      | ReferredBy            | 2026-01-05T09:00:00+00:00 |
      | PurchaseRecorded      | 2026-01-05T09:00:00+00:00 |
      | RefereeRewardPending  | 2026-01-05T09:00:00+00:00 |
      | PointsBecameAvailable | 2026-02-04T09:00:00+00:00 |
      | PointsBecameAvailable | 2026-02-04T09:00:00+00:00 |

  Scenario Outline: A code that does not exist is rejected, naming the field, and nobody is enrolled
    When the storefront enrols "bob" with the email "bob@example.com" and the referral code "<code>"
    Then the response status is 422 and the problem names the field "referral_code"
    And "bob" is not enrolled
    And "ann" has no referrals

    Examples:
      | code         |
      | ZZZZZZZZ     |
      | ZZZZ-ZZZZ    |
      | ABC          |
      | not a code!  |

  Scenario Outline: Nobody may refer themselves: the same email, lower-cased and without its +tag, is refused
    When the storefront enrols "ann-2" with the email "<email>" and the referral code of "ann"
    Then the response status is 422 and the problem names the field "referral_code"
    And "ann-2" is not enrolled
    And "ann" has no referrals
    And "ann" has 0 available points and 0 pending

    Examples:
      | email                   |
      | ann@example.com         |
      | ann+friends@example.com |
      | ANN@EXAMPLE.COM         |
      | Ann+Promo@Example.com   |

  Scenario: A friend is referred once: enrolling again with another code is a conflict, with the same code a no-op
    Given member "carol" is enrolled
    And "bob" enrolled with the referral code of "ann"
    When the storefront enrols "bob" with the email "bob@example.com" and the referral code of "carol"
    Then the response status is 409 and the problem names the field "referral_code"
    When the storefront enrols "bob" with the email "bob@example.com" and the referral code of "ann"
    Then the response status is 200
    And the response shows member "bob" with the email "bob@example.com"
    And "ann" has a "registered" referral of "bob"
    And "carol" has no referrals
    And the ledger recorded 1 "ReferralRegistered" event for "ann"
    And the ledger recorded 1 "ReferredBy" event for "bob"
    # A member enrolled without a code cannot be referred afterwards either.
    When the storefront enrols "carol" with the email "carol@example.com" and the referral code of "ann"
    Then the response status is 409 and the problem names the field "referral_code"
    And "ann" has 1 "registered" referral

  Scenario: A first purchase under 50.00 does not qualify the referral; the next one of 50.00 or more does
    Given "bob" enrolled with the referral code of "ann"
    When the storefront posts purchase "B-1" of "49.99" for "bob"
    Then the response status is 201
    And "ann" has a "registered" referral of "bob"
    And "ann" has 0 available points and 0 pending
    And "bob" has 0 available points and 49 pending
    When 2 days pass
    And the storefront posts purchase "B-2" of "50.00" for "bob"
    Then the referrals of "ann" are:
      | referee | state     | qualifying order | referrer points | referee points | reward available at       |
      | bob     | qualified | B-2              | 500             | 250            | 2026-02-06T09:00:00+00:00 |
    And "ann" has a pending lot of 500 points available at "2026-02-06T09:00:00+00:00"
    And "ann" has 0 available points and 500 pending
    And "bob" has these pending lots:
      | points | available_at              |
      | 49     | 2026-02-04T09:00:00+00:00 |
      | 50     | 2026-02-06T09:00:00+00:00 |
      | 250    | 2026-02-06T09:00:00+00:00 |
    And "bob" has 0 available points and 349 pending
    When 28 days pass and the scheduler runs
    # B-1's own points are available; the referral waits for B-2's window
    Then "ann" has a "qualified" referral of "bob"
    And "ann" has 0 available points and 500 pending
    And "bob" has 49 available points and 300 pending
    When 2 days pass and the scheduler runs
    Then "ann" has a "rewarded" referral of "bob"
    And "ann" has 500 available points and 0 pending
    And "bob" has 349 available points and 0 pending

  Scenario: A full refund of the qualifying purchase inside its window voids the referral and removes both pending rewards
    Given "bob" enrolled with the referral code of "ann"
    And "bob" bought "B-1" for "80.00"
    And "ann" has 0 available points and 500 pending
    And "bob" has 0 available points and 330 pending
    When 10 days pass
    And the storefront refunds the rest of order "B-1" as "RF-1"
    Then the refund claws back 80 points
    And "ann" has a "voided" referral of "bob"
    And "ann" has 0 available points and 0 pending
    And "ann" has 500 points clawed back
    And "bob" has 0 available points and 0 pending
    # 80 for the purchase and the 250 of the referral
    And "bob" has 330 points clawed back
    And the referral of "bob" by "ann" records these causes:
      | step       | cause                    |
      | registered | the enrolment of "bob"   |
      | qualified  | purchase "B-1"           |
      | voided     | refund "RF-1" of "B-1"   |
    # The voided referral was B-1's: a later purchase does not bring it back.
    When the storefront posts purchase "B-2" of "100.00" for "bob"
    Then "ann" has a "voided" referral of "bob"
    And "bob" has 0 available points and 100 pending
    When 30 days pass and the scheduler runs
    Then "ann" has 0 available points and 0 pending
    And "bob" has 100 available points and 0 pending
    And the ledger recorded 0 "ReferralRewarded" events for "ann"

  Scenario: A partial refund that leaves the qualifying purchase under 50.00 inside its window voids the referral
    Given "bob" enrolled with the referral code of "ann"
    And "bob" bought "B-1" for "80.00"
    When 10 days pass
    And the storefront refunds "30.00" of order "B-1" as "RF-1"
    # 50.00 is left, still at the threshold: the referral stands; ceil(80 x 30.00 / 80.00) = 30
    Then the refund claws back 30 points
    And "ann" has a "qualified" referral of "bob"
    And "ann" has 0 available points and 500 pending
    And "bob" has 0 available points and 300 pending
    When the storefront refunds "0.01" of order "B-1" as "RF-2"
    # 49.99 is left, under the threshold; ceil(80 x 30.01 / 80.00) = 31 in all, so 1 more
    Then the refund claws back 1 point
    And "ann" has a "voided" referral of "bob"
    And "ann" has 0 available points and 0 pending
    And "ann" has 500 points clawed back
    And "bob" has 0 available points and 49 pending
    And "bob" has 281 points clawed back
    When 20 days pass and the scheduler runs
    Then "ann" has 0 available points and 0 pending
    And "bob" has 49 available points and 0 pending

  Scenario Outline: Once the qualifying purchase's return window has passed, a refund no longer voids the referral
    Given "bob" enrolled with the referral code of "ann"
    And "bob" bought "B-1" for "80.00"
    When <time passes>
    And the storefront refunds the rest of order "B-1" as "RF-1"
    Then the refund claws back 80 points
    And "ann" has a "<state>" referral of "bob"
    And "ann" has <ann available> available points and 0 pending
    And "bob" has <bob available> available points and 0 pending
    When 30 days pass and the scheduler runs
    Then "ann" has a "<state>" referral of "bob"
    And "ann" has <ann available> available points and 0 pending
    And "bob" has <bob available> available points and 0 pending

    Examples:
      | time passes                         | state    | ann available | bob available |
      | 29 days pass                        | voided   | 0             | 0             |
      | 30 days pass                        | rewarded | 500           | 250           |
      | 30 days pass and the scheduler runs | rewarded | 500           | 250           |
      | 40 days pass and the scheduler runs | rewarded | 500           | 250           |

  Scenario: A referrer earns at most 20 referral rewards per 365 days; a 21st qualifying friend is capped, with no reward for either
    Given 20 friends of "ann" enrolled with her referral code and each bought "50.00"
    Then "ann" has 20 "qualified" referrals
    # 20 x 500
    And "ann" has 0 available points and 10000 pending
    And "friend-20" has 0 available points and 300 pending
    When the storefront enrols "friend-21" with the email "friend-21@example.com" and the referral code of "ann"
    And the storefront posts purchase "F-21" of "50.00" for "friend-21"
    Then the response status is 201
    And "ann" has a "capped" referral of "friend-21"
    And "ann" has 20 "qualified" referrals
    And "ann" has 0 available points and 10000 pending
    # only the purchase's own 50 points
    And "friend-21" has 0 available points and 50 pending
    And the ledger recorded 1 "ReferralCapped" event for "ann"
    And the ledger recorded 1 "RefereeReferralCapped" event for "friend-21"
    And reading the referrals of "ann" 10 at a time gives 3 pages, in the order the friends enrolled
    When 30 days pass and the scheduler runs
    Then "ann" has 20 "rewarded" referrals
    And "ann" has a "capped" referral of "friend-21"
    And "ann" has 10000 available points and 0 pending
    And "friend-21" has 50 available points and 0 pending
    # 365 days after the first 20 qualified, they no longer count against the cap
    When 335 days pass
    And the storefront enrols "friend-22" with the email "friend-22@example.com" and the referral code of "ann"
    And the storefront posts purchase "F-22" of "50.00" for "friend-22"
    Then "ann" has a "qualified" referral of "friend-22"
    And "ann" has 10000 available points and 500 pending
    And "friend-22" has 0 available points and 300 pending

  Scenario: A referral keeps the terms in force when it was registered
    Given "bob" enrolled with the referral code of "ann"
    When the admin publishes a program version in which a referrer earns 1000 points and a referee 400 for a first purchase of "100.00"
    Then the response status is 200
    And the program in force is version 2
    And the program in force has these referral rules:
      | referrer_points | referee_points | qualifying_amount | cap | cap_days |
      | 1000            | 400            | 100.00            | 20  | 365      |
    When the storefront enrols "carol" with the email "carol@example.com" and the referral code of "ann"
    # bob was registered under version 1: 80.00 reaches its 50.00 and earns 500 and 250
    And the storefront posts purchase "B-1" of "80.00" for "bob"
    # carol was registered under version 2: 80.00 does not reach its 100.00
    And the storefront posts purchase "C-1" of "80.00" for "carol"
    Then the referrals of "ann" are:
      | referee | state      | qualifying order | referrer points | referee points | reward available at       |
      | bob     | qualified  | B-1              | 500             | 250            | 2026-02-04T09:00:00+00:00 |
      | carol   | registered |                  | 0               | 0              |                           |
    And "ann" has 0 available points and 500 pending
    And "bob" has 0 available points and 330 pending
    And "carol" has 0 available points and 80 pending
    When the storefront posts purchase "C-2" of "100.00" for "carol"
    Then the referrals of "ann" are:
      | referee | state     | qualifying order | referrer points | referee points | reward available at       |
      | bob     | qualified | B-1              | 500             | 250            | 2026-02-04T09:00:00+00:00 |
      | carol   | qualified | C-2              | 1000            | 400            | 2026-02-04T09:00:00+00:00 |
    # 500 + 1000
    And "ann" has 0 available points and 1500 pending
    # 80 + 100 + 400
    And "carol" has 0 available points and 580 pending

  Scenario: A member's referrals are read by storefronts, auditors, admins and the member itself
    Given member "carol" is enrolled
    And "bob" enrolled with the referral code of "ann"
    When these callers read the referrals of "ann":
      | caller           | expected status |
      | storefront       | 200             |
      | auditor          | 200             |
      | admin            | 200             |
      | member ann       | 200             |
      | member bob       | 403             |
      | member carol     | 403             |
      | anonymous caller | 401             |
    Then each caller gets its expected status
    And every caller who may read them finds these referrals:
      | referee | state      |
      | bob     | registered |
