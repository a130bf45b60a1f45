Feature: Customer value shows which members matter, as of any date
  All customers are not equal. The net contribution of a member is purchases - refunds -
  guarantee payouts - the value of the points redeemed (0.01 per point by default); a guarantee
  payout is the whole amount handed back, so the refund a claim records is not counted twice.
  Among the members with purchases, a member's standing is the share of them with a strictly
  greater value, so tied members share the better class or score. Value class A, B, C or D by
  quartile of standing (under 25%, 50%, 75%, the rest); a negative contribution is always D.
  RFM scores 1-5 by quintile of standing as of the date: recency (whole days since the last
  purchase, fewer is better), frequency (purchases) and monetary (net contribution). The Pareto
  report gives the share of the total net contribution that the top 20% bring, the top 20% of
  N members being the best ceil(N / 5) of them.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And these members are enrolled: "ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy"
    And "ann" bought "A-1" for "600.00"
    And "bob" bought "B-1" for "400.00"
    And "cat" bought "C-1" for "100.00"
    And "dan" bought "D-1" for "100.00" under the "double" guarantee
    And "eve" bought "E-1" for "50.00"
    And "fay" bought "F-1" for "250.00"
    And 10 days pass
    And "dan" claimed the guarantee of order "D-1" as "CL-1" with the evidence "it broke"
    And "cat" bought "C-2" for "100.00"
    And "gus" bought "G-1" for "200.00"
    And 10 days pass
    And "ann" bought "A-2" for "400.00"
    And "cat" bought "C-3" for "100.00"
    And "hal" bought "H-1" for "150.00"
    And 31 days pass
    And "ann" redeemed 500 points as "R-1"
    And the storefront refunded "100.00" of order "B-1" as "RF-1"
    And "eve" bought "E-2" for "50.00"

  Scenario: Value classes by quartile, ties sharing the better class, a negative contribution in D
    # 8 members with purchases; the share with a strictly greater contribution: ann 0, bob and
    # cat 1/8 (A), fay 3/8 (B), gus 4/8 and hal 5/8 (C), eve 6/8 (D); dan's double guarantee
    # paid 200.00 back on a 100.00 order, so dan is D whatever the rank.
    Then the customer values are:
      | member | class | net contribution | stage    |
      | ann    | A     | 995.00           | repeat   |
      | bob    | A     | 300.00           | new      |
      | cat    | A     | 300.00           | repeat   |
      | fay    | B     | 250.00           | new      |
      | gus    | C     | 200.00           | new      |
      | hal    | C     | 150.00           | new      |
      | eve    | D     | 100.00           | repeat   |
      | dan    | D     | -100.00          | new      |
      | ivy    |       | 0.00             | prospect |
    And the stage of every member is the one its status shows

  Scenario: RFM scores by quintile as of the date
    # Scores 5 - floor(5 x standing). Recency in days on 2026-02-25: eve 0; ann, cat, hal 31;
    # gus 41; bob, dan, fay 51. Frequency: cat 3; ann, eve 2; the others 1.
    Then the RFM scores are:
      | member | recency days | recency | frequency | monetary |
      | ann    | 31           | 5       | 5         | 5        |
      | bob    | 51           | 2       | 4         | 5        |
      | cat    | 31           | 5       | 5         | 5        |
      | fay    | 51           | 2       | 4         | 4        |
      | gus    | 41           | 3       | 4         | 3        |
      | hal    | 31           | 5       | 4         | 2        |
      | eve    | 0            | 5       | 5         | 2        |
      | dan    | 51           | 2       | 4         | 1        |
    And "ivy" has no value class and no RFM scores

  Scenario: Realised lifetime value, average order value and purchases per year of tenure
    Then "ann" has a lifetime value of "995.00" from 2 purchases averaging "500.00"
    And "ann" makes 14.31 purchases per year of tenure
    And "cat" has a lifetime value of "300.00" from 3 purchases averaging "100.00"
    And "cat" makes 21.47 purchases per year of tenure

  Scenario: The Pareto report: the share the top 20% bring
    # ceil(8 / 5) = 2 members: ann 995.00 + bob 300.00 = 1295.00 of 2195.00
    Then the top 20% bring 0.59 of the net contribution of 8 members with purchases

  Scenario: As of an earlier date the classes are the ones of that date
    # On 2026-01-10: 6 members with purchases, dan's claim and the later purchases not yet made.
    # ann 0, bob 1/6 (A), fay 2/6 (B), cat and dan 3/6 (C), eve 5/6 (D).
    Then the customer values as of "2026-01-10T09:00:00+00:00" are:
      | member | class | net contribution | stage    |
      | ann    | A     | 600.00           | new      |
      | bob    | A     | 400.00           | new      |
      | fay    | B     | 250.00           | new      |
      | cat    | C     | 100.00           | new      |
      | dan    | C     | 100.00           | new      |
      | eve    | D     | 50.00            | new      |
      | gus    |       | 0.00             | prospect |
      | hal    |       | 0.00             | prospect |
      | ivy    |       | 0.00             | prospect |
    And as of "2026-01-10T09:00:00+00:00" the top 20% bring 0.6667 of the net contribution of 6 members with purchases

  Scenario: Marketing lists one value class a page at a time
    When the auditor lists the members of value class "A" 2 at a time
    Then the pages list "ann, bob" and "cat"
    When the auditor lists the members of value class "D" 2 at a time
    Then the pages list "eve, dan"

  Scenario: A value class that does not exist is refused
    When the auditor asks for the members of value class "E"
    Then the response status is 422 and the problem names the field "class"

  Scenario: Customer value is for auditors and admins
    When these callers read the customer values:
      | caller           | expected status |
      | auditor          | 200             |
      | admin            | 200             |
      | storefront       | 403             |
      | member ann       | 403             |
      | anonymous caller | 401             |
    Then each caller gets its expected status
