Feature: Follow-up plans
  For each rank of customers a plan of when to contact them, with what and how, kept in the
  customer database so that nothing is forgotten: prompt thanks after a purchase are the
  cheapest and strongest sales activity. A plan has an audience, a trigger (a member event),
  steps (a delay from the trigger, a channel, a message key the shop's own systems render), a
  stop condition, a goal and a holdout share (10%) of the audience that deliberately gets no
  steps. Plans are versioned like the program; a follow-up keeps the version it started under.

  When a trigger happens to a member in the audience, a follow-up starts, assigned to the
  treated or the holdout group by a stable hash of member and plan. Each step falls due at its
  time, recorded by the scheduler like every time-driven change, and is delivered to the shop as
  a "followup.step_due" webhook; a holdout member's steps are recorded as withheld and nothing
  is sent. A stop condition ends the follow-up, with the reason. The effect of each plan version
  (treated against holdout) is how an operator learns whether a plan works.

  The follow-up process follows the ledger's log and starts the follow-ups; "the follow-up
  process has caught up" means it has read everything recorded so far. Imported history, and a
  trigger recorded more than 7 days after it happened, start nothing.

  Background:
    Given the program's defaults
    And the "thank-you" plan in force is version 1, for a first purchase, stopped by a purchase, holding out 10%, with these steps:
      | day | channel | message                      |
      | 0   | email   | thank-you/thanks             |
      | 3   | email   | thank-you/useful-information |
      | 7   | email   | thank-you/follow-up          |
    # So that each scenario shows one plan at work.
    And the "prospect", "a-class" and "referrer" plans are paused
    And it is 2026-03-02T09:00:00+00:00

  Scenario: A first purchase starts "thank-you", and its steps fall due on days 0, 3 and 7
    Given member "cid" is enrolled
    And "cid" is in the "treated" group of "thank-you"
    When the storefront posts purchase "C-1" of "40.00" for "cid"
    And the follow-up process has caught up
    Then "cid" has an "active" follow-up of "thank-you" version 1, triggered at 2026-03-02T09:00:00+00:00
    And the steps of the "thank-you" follow-up of "cid" are:
      | step | due at                    | channel | message                      | state   |
      | 1    | 2026-03-02T09:00:00+00:00 | email   | thank-you/thanks             | due     |
      | 2    | 2026-03-05T09:00:00+00:00 | email   | thank-you/useful-information | waiting |
      | 3    | 2026-03-09T09:00:00+00:00 | email   | thank-you/follow-up          | waiting |
    When 2 days pass and the scheduler runs
    Then the steps of the "thank-you" follow-up of "cid" are "due, waiting, waiting"
    When 1 day passes and the scheduler runs
    Then the steps of the "thank-you" follow-up of "cid" are "due, due, waiting"
    When 3 days pass and the scheduler runs
    Then the steps of the "thank-you" follow-up of "cid" are "due, due, waiting"
    When 1 day passes and the scheduler runs
    Then the steps of the "thank-you" follow-up of "cid" are "due, due, due"
    And "cid" has a "completed" follow-up of "thank-you" version 1, triggered at 2026-03-02T09:00:00+00:00
    And the ledger recorded these changes for "cid", in this order:
      | change           | at                        |
      | FollowupStarted  | 2026-03-02T09:00:00+00:00 |
      | FollowupStepDue  | 2026-03-02T09:00:00+00:00 |
      | FollowupStepDue  | 2026-03-05T09:00:00+00:00 |
      | FollowupStepDue  | 2026-03-09T09:00:00+00:00 |

  Scenario: A holdout member's steps are recorded as withheld, and nothing is sent to the shop
    Given the admin subscribed "crm" to "followup.step_due"
    And member "ann" is enrolled
    And member "cid" is enrolled
    And "ann" is in the "holdout" group of "thank-you"
    And "cid" is in the "treated" group of "thank-you"
    When the storefront posts purchase "A-1" of "40.00" for "ann"
    And the storefront posts purchase "C-1" of "40.00" for "cid"
    And the follow-up process has caught up
    And 3 days pass and the scheduler runs
    And the dispatcher delivers
    Then the steps of the "thank-you" follow-up of "ann" are "withheld, withheld, waiting"
    And the steps of the "thank-you" follow-up of "cid" are "due, due, waiting"
    And the ledger recorded these changes for "ann", in this order:
      | change               | at                        |
      | FollowupStepWithheld | 2026-03-02T09:00:00+00:00 |
      | FollowupStepWithheld | 2026-03-05T09:00:00+00:00 |
    And the ledger recorded 0 "FollowupStepDue" events for "ann"
    And "crm" received these messages, in this order, each signed with its secret:
      | type              | member_id | plan      | plan_version | step | channel | message_key                  | due_at                    |
      | followup.step_due | cid       | thank-you | 1            | 1    | email   | thank-you/thanks             | 2026-03-02T09:00:00+00:00 |
      | followup.step_due | cid       | thank-you | 1            | 2    | email   | thank-you/useful-information | 2026-03-05T09:00:00+00:00 |

  Scenario: A purchase before the last step stops a plan whose stop condition is a purchase
    Given member "cid" is enrolled
    And "cid" is in the "treated" group of "thank-you"
    And "cid" bought "C-1" for "40.00"
    And the follow-up process has caught up
    When 5 days pass and the scheduler runs
    And the storefront posts purchase "C-2" of "25.00" for "cid"
    And the follow-up process has caught up
    And 5 days pass and the scheduler runs
    Then "cid" has a "stopped" follow-up of "thank-you" version 1, triggered at 2026-03-02T09:00:00+00:00
    And the "thank-you" follow-up of "cid" stopped at 2026-03-07T09:00:00+00:00 because "purchased"
    And the steps of the "thank-you" follow-up of "cid" are "due, due, waiting"
    And the ledger recorded these changes for "cid", in this order:
      | change           | at                        |
      | PurchaseRecorded | 2026-03-02T09:00:00+00:00 |
      | FollowupStarted  | 2026-03-02T09:00:00+00:00 |
      | FollowupStepDue  | 2026-03-02T09:00:00+00:00 |
      | FollowupStepDue  | 2026-03-05T09:00:00+00:00 |
      | PurchaseRecorded | 2026-03-07T09:00:00+00:00 |
      | FollowupStopped  | 2026-03-07T09:00:00+00:00 |

  Scenario: A new plan version applies to the follow-ups started after it; those before keep theirs
    Given member "cid" is enrolled
    And member "dan" is enrolled
    And "dan" is in the "treated" group of "thank-you"
    And "cid" bought "C-1" for "40.00"
    When the admin publishes a version of the "thank-you" plan with these steps:
      | day | channel | message              |
      | 0   | sms     | thank-you/thanks-sms |
      | 1   | call    | thank-you/call       |
    And the storefront posts purchase "D-1" of "40.00" for "dan"
    # The process reads the log in order: "cid" bought under version 1, "dan" under version 2.
    And the follow-up process has caught up
    Then the "thank-you" plan in force is version 2
    And "cid" has an "active" follow-up of "thank-you" version 1, triggered at 2026-03-02T09:00:00+00:00
    And the steps of the "thank-you" follow-up of "cid" are:
      | step | due at                    | channel | message                      | state   |
      | 1    | 2026-03-02T09:00:00+00:00 | email   | thank-you/thanks             | due     |
      | 2    | 2026-03-05T09:00:00+00:00 | email   | thank-you/useful-information | waiting |
      | 3    | 2026-03-09T09:00:00+00:00 | email   | thank-you/follow-up          | waiting |
    And "dan" has an "active" follow-up of "thank-you" version 2, triggered at 2026-03-02T09:00:00+00:00
    And the steps of the "thank-you" follow-up of "dan" are:
      | step | due at                    | channel | message              | state   |
      | 1    | 2026-03-02T09:00:00+00:00 | sms     | thank-you/thanks-sms | due     |
      | 2    | 2026-03-03T09:00:00+00:00 | call    | thank-you/call       | waiting |
    When 1 day passes and the scheduler runs
    Then "dan" has a "completed" follow-up of "thank-you" version 2, triggered at 2026-03-02T09:00:00+00:00
    And the steps of the "thank-you" follow-up of "cid" are "due, waiting, waiting"

  Scenario: A member who goes quiet for the program's 180 dormant days enters "win-back"
    Given member "cid" is enrolled
    And "cid" is in the "treated" group of "win-back"
    And "cid" bought "C-1" for "40.00"
    And the follow-up process has caught up
    When 179 days pass and the scheduler runs
    And the follow-up process has caught up
    Then "cid" has no follow-up of "win-back"
    And the ledger recorded 0 "BecameDormant" events for "cid"
    # 2026-03-02 + 180 days
    When 1 day passes and the scheduler runs
    And the follow-up process has caught up
    Then the ledger recorded 1 "BecameDormant" event for "cid"
    And "cid" has an "active" follow-up of "win-back" version 1, triggered at 2026-08-29T09:00:00+00:00
    And the steps of the "win-back" follow-up of "cid" are:
      | step | due at                    | channel | message              | state   |
      | 1    | 2026-08-29T09:00:00+00:00 | email   | win-back/we-miss-you | due     |
      | 2    | 2026-09-12T09:00:00+00:00 | letter  | win-back/offer       | waiting |

  Scenario: A member back before any scheduler run recorded the dormancy ends "win-back" at once
    Given member "cid" is enrolled
    And "cid" is in the "treated" group of "win-back"
    And "cid" bought "C-1" for "40.00"
    And the follow-up process has caught up
    # No scheduler run: the purchase on day 185 first records the dormancy of day 180.
    When 185 days pass
    And the storefront posts purchase "C-2" of "25.00" for "cid"
    And the follow-up process has caught up
    And 14 days pass and the scheduler runs
    Then "cid" has a "stopped" follow-up of "win-back" version 1, triggered at 2026-08-29T09:00:00+00:00
    And the "win-back" follow-up of "cid" stopped at 2026-09-03T09:00:00+00:00 because "purchased"
    # As on time: the first step fell due before the purchase, the offer would have after it.
    And the steps of the "win-back" follow-up of "cid" are:
      | step | due at                    | channel | message              | state   |
      | 1    | 2026-08-29T09:00:00+00:00 | email   | win-back/we-miss-you | due     |
      | 2    | 2026-09-12T09:00:00+00:00 | letter  | win-back/offer       | waiting |

  Scenario: Imported history starts nothing, however recent; a purchase posted live does
    When the storefront imports these records:
      | kind     | id  | of  | at                        | amount |
      | member   | dan |     | 2019-04-01T12:00:00+00:00 |        |
      | purchase | D-1 | dan | 2019-05-02T12:00:00+00:00 | 80.00  |
      | member   | eve |     | 2026-02-01T12:00:00+00:00 |        |
      | purchase | E-1 | eve | 2026-02-28T12:00:00+00:00 | 60.00  |
    And the storefront enrols "cid" with the email "cid@example.com"
    And the storefront posts purchase "C-1" of "40.00" for "cid"
    And the follow-up process has caught up
    # dan's dormancy, due since 2019, is history caught up with: no win-back either
    And 1 day passes and the scheduler runs
    And the follow-up process has caught up
    Then "dan" has no follow-ups
    And the ledger recorded 1 "BecameDormant" event for "dan"
    And "eve" has no follow-ups
    And "cid" has an "active" follow-up of "thank-you" version 1, triggered at 2026-03-02T09:00:00+00:00

  Scenario: The effect of a plan version: each group's members, conversions and revenue
    # The goal of "thank-you" is a purchase within 30 days of the first.
    Given member "ann" is enrolled
    And member "cid" is enrolled
    And member "dan" is enrolled
    And "ann" is in the "holdout" group of "thank-you"
    And "cid" is in the "treated" group of "thank-you"
    And "dan" is in the "treated" group of "thank-you"
    And "ann" bought "A-1" for "40.00"
    And "cid" bought "C-1" for "40.00"
    And "dan" bought "D-1" for "40.00"
    And the follow-up process has caught up
    And 5 days pass
    # converted on day 5 (and stopped there, before step 3)
    And "cid" bought "C-2" for "60.00"
    And 30 days pass and the scheduler runs
    # day 35: too late for the goal
    And "ann" bought "A-2" for "90.00"
    And the follow-up process has caught up
    When the auditor reads the effect of the "thank-you" plan
    Then the effect of "thank-you" version 1 is, for 3 members entered:
      | group   | members | converted | conversion rate | revenue | revenue per member |
      | treated | 2       | 1         | 0.5             | 60.00   | 30.00              |
      | holdout | 1       | 0         | 0.0             | 0.00    | 0.00               |
    And the steps of "thank-you" version 1 reached:
      | step | reached | share reached | withheld |
      | 1    | 2       | 1.0           | 1        |
      | 2    | 2       | 1.0           | 1        |
      | 3    | 1       | 0.5           | 1        |
