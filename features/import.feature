Feature: Histories from before Daifuku (import)
  A shop adopting Daifuku has years of customers and orders in another system (the old 大福帳).
  It must be able to bring them in so that tiers, points, lots and referral states come out
  exactly as if Daifuku had been running all along. An import is a sequence of records, one
  JSON object a line: member, purchase, refund, redemption. Each record carries its own id, so
  running the same import twice records nothing twice, and an import stopped half-way is
  resumed by running it again. Records are applied in business-time order per member, and
  everything time-driven that falls due between them is recorded at the time it fell due. A bad
  record is rejected on its own with its line number and the same problem a single request
  would get; it changes nothing, and the rest of the import goes on.

  In the record tables, "of" is the member of a purchase or a redemption and the order of a
  refund; a member's email is its id at example.com.

  Background:
    Given the program's defaults
    And it is 2026-06-01T00:00:00+00:00

  Scenario: A member with three years of history ends with the status a hand-computed example gives
    Given the import file "ann.jsonl" holds these records:
      | kind       | id   | of  | at                        | amount  | category | points |
      | member     | ann  |     | 2023-06-01T12:00:00+00:00 |         |          |        |
      | purchase   | A-1  | ann | 2023-06-10T12:00:00+00:00 | 300.00  | tea      |        |
      | purchase   | A-2  | ann | 2023-08-01T12:00:00+00:00 | 250.00  | tea      |        |
      | redemption | X-1  | ann | 2023-09-15T12:00:00+00:00 |         |          | 200    |
      | purchase   | A-3  | ann | 2024-03-01T12:00:00+00:00 | 100.00  | cups     |        |
      | purchase   | A-4  | ann | 2025-02-01T12:00:00+00:00 | 2100.00 |          |        |
      | refund     | RF-1 | A-4 | 2025-02-20T12:00:00+00:00 | 300.00  |          |        |
      | purchase   | A-5  | ann | 2026-01-10T12:00:00+00:00 | 600.00  | cups     |        |
      | purchase   | A-6  | ann | 2026-05-20T12:00:00+00:00 | 80.00   | tea      |        |
    When the import file "ann.jsonl" is imported
    Then the import applied all 9 records
    # A-1, bronze x1.0: 300 + 50 (tea is new) = 350, available 2023-07-10, expires 2025-07-09.
    # A-2, bronze: 250; trailing spend 300 + 250 = 550 >= 500: silver from 2023-08-01, review
    #   2024-07-31 (365 days, 2024 has a 29 February); available 2023-08-31, expires 2025-08-30.
    # X-1: 600 available; FIFO takes 200 from A-1's lot, which keeps 150.
    # A-3, silver x1.25: floor(100 x 1.25) = 125 + 50 (cups is new) = 175; spend 650: silver;
    #   available 2024-03-31, expires 2026-03-31.
    # Review 2024-07-31: spend in (2023-08-01, 2024-07-31] is A-3's 100 < 500: down one, bronze.
    # A-4, bronze: 2100; spend in (2024-02-01, 2025-02-01] is 100 + 2100 = 2200: gold at once
    #   (review 2026-02-01); available 2025-03-03.
    # RF-1: ceil(2100 x 300 / 2100) = 300 points back from A-4's lot (2100 -> 1800); the spend
    #   behind the upgrade is now 100 + 1800 = 1900 < 2000: down at once to silver, the tier
    #   1900 still reaches (review 2026-02-20).
    # 2025-07-09: A-1's 150 expire; 2025-08-30: A-2's 250 expire.
    # A-5, silver: floor(600 x 1.25) = 750; spend in (2025-01-10, 2026-01-10] is 1800 + 600 =
    #   2400: gold from 2026-01-10, review 2027-01-10; available 2026-02-09.
    # 2026-03-31: A-3's 175 expire.
    # A-6, gold x1.5: floor(80 x 1.5) = 120, pending until 2026-06-19.
    # Today: spend in (2025-06-01, 2026-06-01] is 600 + 80 = 680; platinum needs 5000 - 680;
    #   the review counts spend after 2026-01-10 12:00 (A-6 only): 2000 - 80 = 1920 to keep.
    # Earned 350 + 250 + 175 + 2100 + 750 + 120 = 3745; expired 150 + 250 + 175 = 575;
    #   available 1800 + 750 = 2550 = 3745 - 300 clawed back - 200 redeemed - 575 - 120 pending.
    And "ann" holds the "gold" tier with a qualifying spend of "680.00"
    And "ann" needs "4320.00" more for "platinum"
    And "ann" needs "1920.00" to keep the tier at the review on "2027-01-10T12:00:00+00:00"
    And "ann" has 2550 available points and 120 pending
    And "ann" has a pending lot of 120 points available at "2026-06-19T12:00:00+00:00"
    And "ann" has earned 3745 points in all
    And "ann" has 575 expired points
    And "ann" has 300 points clawed back
    And "ann" has 200 points redeemed
    And "ann" is at the "loyal" stage
    And the ledger recorded these changes for "ann", in this order:
      | change         | at                        |
      | TierUpgraded   | 2023-08-01T12:00:00+00:00 |
      | TierDowngraded | 2024-07-31T12:00:00+00:00 |
      | TierUpgraded   | 2025-02-01T12:00:00+00:00 |
      | TierDowngraded | 2025-02-20T12:00:00+00:00 |
      | PointsExpired  | 2025-07-09T12:00:00+00:00 |
      | PointsExpired  | 2025-08-30T12:00:00+00:00 |
      | TierUpgraded   | 2026-01-10T12:00:00+00:00 |
      | PointsExpired  | 2026-03-31T12:00:00+00:00 |
    And the ledger recorded these tier changes for "ann":
      | from   | to     | reason  |
      | bronze | silver |         |
      | silver | bronze | review  |
      | bronze | gold   |         |
      | gold   | silver | refund  |
      | silver | gold   |         |

  Scenario: Orders of last year and before give the tier of each year's trailing spend, not of all years
    Given the import file "bob.jsonl" holds these records:
      | kind     | id  | of  | at                        | amount  | category | points |
      | member   | bob |     | 2023-01-10T12:00:00+00:00 |         |          |        |
      | purchase | B-1 | bob | 2023-02-01T12:00:00+00:00 | 1500.00 |          |        |
      | purchase | B-2 | bob | 2024-03-01T12:00:00+00:00 | 1500.00 |          |        |
      | purchase | B-3 | bob | 2025-09-01T12:00:00+00:00 | 1500.00 |          |        |
    When the import file "bob.jsonl" is imported
    Then the import applied all 4 records
    # Each order is more than 365 days after the one before: the trailing spend is never more
    # than one order's 1500 (silver), never the 4500 (gold) of the three years together.
    # B-1: silver until its review on 2024-02-01 finds nothing in the trailing 365 days.
    # B-2 earns at bronze (1500, not 1875 at silver): silver until the review on 2025-03-01.
    # B-3 earns at bronze: silver, reviewed on 2026-09-01.
    And "bob" holds the "silver" tier with a qualifying spend of "1500.00"
    And "bob" has a tier review on "2026-09-01T12:00:00+00:00"
    And "bob" has earned 4500 points in all
    And the ledger recorded these changes for "bob", in this order:
      | change         | at                        |
      | TierUpgraded   | 2023-02-01T12:00:00+00:00 |
      | TierDowngraded | 2024-02-01T12:00:00+00:00 |
      | TierUpgraded   | 2024-03-01T12:00:00+00:00 |
      | TierDowngraded | 2025-03-01T12:00:00+00:00 |
      | TierUpgraded   | 2025-09-01T12:00:00+00:00 |
    And "bob" ends as when the same records are posted one by one, each on its day

  Scenario: The same import run twice changes nothing
    Given the import file "ann.jsonl" holds these records:
      | kind       | id   | of  | at                        | amount | category | points |
      | member     | ann  |     | 2024-06-01T12:00:00+00:00 |        |          |        |
      | purchase   | A-1  | ann | 2024-06-10T12:00:00+00:00 | 300.00 | tea      |        |
      | purchase   | A-2  | ann | 2024-08-01T12:00:00+00:00 | 250.00 | cups     |        |
      | redemption | X-1  | ann | 2024-09-15T12:00:00+00:00 |        |          | 200    |
      | refund     | RF-1 | A-2 | 2024-09-20T12:00:00+00:00 | 50.00  |          |        |
    And the import file "ann.jsonl" was imported
    When the import file "ann.jsonl" is imported again
    Then the second import found all 5 records already present
    And the event log is as the first import left it

  Scenario: A bad line is reported with its number while the others land
    Given the import file "ann.jsonl" holds these records:
      | kind     | id   | of  | at                        | amount | category | points |
      | member   | ann  |     | 2025-06-01T12:00:00+00:00 |        |          |        |
      | purchase | A-1  | ann | 2025-06-10T12:00:00+00:00 | 300.00 | tea      |        |
      | refund   | RF-1 | A-1 | 2025-06-20T12:00:00+00:00 | 400.00 |          |        |
      | purchase | A-2  | eve | 2025-07-01T12:00:00+00:00 | 100.00 |          |        |
      | purchase | A-3  | ann | 2025-08-01T12:00:00+00:00 | 250.00 |          |        |
    When the import file "ann.jsonl" is imported
    Then the import reports these lines:
      | line | status   | problem        | field  |
      | 1    | applied  |                |        |
      | 2    | applied  |                |        |
      | 3    | rejected | over-refund    | amount |
      | 4    | rejected | unknown-member |        |
      | 5    | applied  |                |        |
    And no event was recorded for lines 3 and 4
    # A-1: 300 + 50 (tea is new); A-3 at bronze: 250, and 550 of spend make "ann" silver;
    # both lots are available by today, and nothing was refunded.
    And "ann" has 600 available points and 0 pending
    And "ann" holds the "silver" tier with a qualifying spend of "550.00"
    And "eve" is not enrolled

  Scenario: An import killed half-way and run again ends with the same ledger as one run
    Given the import file "shop.jsonl" holds the history of 40 members of a shop
    When "daifuku import shop.jsonl --batch 2" is killed after its first batches are saved
    Then the store holds part of the history of "shop.jsonl"
    When "daifuku import shop.jsonl --batch 2" runs again to the end
    Then it found the records saved before the kill present, applied the others, rejected none
    And every member of "shop.jsonl" ends as after one run of it into a fresh store
