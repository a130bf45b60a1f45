Feature: Audit: the ledger is the truth; every read model is rebuilt and checked from it
  Every fact is an event appended to the ledger, and nothing is updated or deleted in place. The
  read models (each member's status and referrals, each purchase) are only what the history
  says: they can be thrown away and rebuilt by replaying the history, the ledger answering in
  the meantime, and members and auditors then see exactly what they saw before. An auditor exports the ledger as JSON Lines in which every line
  carries the SHA-256 of the line before it, so anyone can check an export offline: a line that
  was changed breaks the chain at that line. The verification replays the history into a fresh
  view up to the live view's position and reports every difference, naming the member and the
  field; it runs in the background, the auditor following its progress, and an auditor asking
  while one runs is given that one. The projection worker records the position of the events it applied in the same
  transaction as the rows they changed, so a worker killed at any moment and started again
  applies every event exactly once.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled
    And "bob" enrolled with the referral code of "ann"
    And member "cat" is enrolled
    And "ann" bought "A-1" for "620.00"
    And "bob" bought "B-1" for "80.00"
    And "cat" bought "C-1" for "150.00" under the "trial-90" guarantee
    And 31 days pass and the scheduler runs
    And "ann" redeemed 300 points as "R-1"
    And the storefront refunded "120.00" of order "A-1" as "RF-1"
    And "cat" claimed the guarantee of order "C-1" as "CL-1" with the evidence "it did not fit"
    And the admin published a program version in which the "bronze" tier multiplies points by "2.0"
    And "bob" bought "B-2" for "45.50"
    And 400 days pass and the scheduler runs
    And "cat" bought "C-2" for "30.00"

  Scenario: Deleting the read models and replaying the history changes nothing anyone sees
    Given the API answers reads from the read models
    And the projection worker has caught up with the ledger
    And the ledger holds the members "ann", "bob" and "cat" and the orders "A-1", "B-1", "B-2", "C-1" and "C-2"
    And every member's status and the analytics have been noted
    When the read models are deleted
    Then the member-status view is empty and has read nothing of the ledger
    And meanwhile the ledger answers every read as the read models did
    When the history is replayed
    Then every member's status, referrals and purchases read as noted, from the read models
    And the analytics are the ones noted
    And the member-status view holds the rows it held before, as of the last event

  Scenario: A line changed in the export breaks the hash chain at that line
    When the auditor exports the ledger
    Then the export verifies offline: one line per event of the log, then the summary
    When the amount of purchase "B-2" is changed to "4550.00" in the export
    Then the offline verification finds the chain broken at the line of purchase "B-2": "the line's content does not match its sha256"
    And the verify-export command says the same and fails

  Scenario: A forger who also reseals the changed line is caught at the next line
    # The changed line's own sha256 is recomputed, so it checks out by itself; the next line
    # still carries the hash of the original line.
    When the auditor exports the ledger
    And the amount of purchase "B-2" is changed to "4550.00" in the export and the line resealed
    Then the offline verification finds the chain broken at the line after purchase "B-2": "prev_sha256 is not the previous line's hash"
    And the verify-export command says the same and fails

  Scenario Outline: The verification names the member and the field of a view row changed behind its back
    Given the projection worker has caught up with the ledger
    When the auditor asks for a verification
    Then the verification replayed every event of the log and found no difference
    When someone sets "<field>" of "<member>" to <value> directly in the member-status table
    And the auditor asks for a verification
    Then the verification reports only "<field>" of "<member>": <value> in the live view, the value the view held before in the replay

    Examples:
      | member | field            | value      |
      | ann    | points.available | 12345      |
      | bob    | tier.name        | "platinum" |

  Scenario: A verification runs in the background, and asking again while it runs gives the same one
    Given the projection worker has caught up with the ledger
    When the auditor starts a verification that is held after replaying its first events
    Then the verification is running, with how many events it has replayed out of how many
    And the auditor asking again is given the same verification
    When the verification is let go and finishes
    Then the verification replayed every event of the log and found no difference

  Scenario: The verification reports a view row deleted behind its back
    Given the projection worker has caught up with the ledger
    When someone deletes the row of "cat" directly from the member-status table
    And the auditor asks for a verification
    Then the verification reports only that the row of "cat" is missing in the live view

  Scenario Outline: A projection worker killed mid-batch and started again applies every event exactly once
    # Killed just before: the statements of the batch that holds the event were executed but
    # never committed. Killed just after: that batch committed, and the worker dies in the
    # middle of writing the next one. Either way the view holds exactly the events up to its
    # position, no more and no fewer, and a new worker goes on from there.
    Given the projection worker reads the log in batches of 8 events
    And the projection worker has projected the ledger up to event 10
    When a projection worker is killed <moment> it commits the batch that holds event 20
    Then the member-status view is exactly as of its position: the verification finds no difference
    When a new projection worker starts and catches up
    Then the member-status view holds what a replay from scratch holds, as of the last event
    And every event was applied exactly once

    Examples:
      | moment      |
      | just before |
      | just after  |
