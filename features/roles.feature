Feature: Who may do what
  Every request carries a credential. Storefronts enrol members, post purchases, refunds and
  cancellations, read any member and mint member tokens. A member token is bound to one
  member: it reads that member's status and history and redeems that member's points, and
  expires (by default after an hour). Auditors read everything and change nothing. Admins
  may do everything, including publishing a new program version. No or bad credentials are
  refused with 401; a credential whose role may not do something is refused with 403.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled
    And member "bob" is enrolled
    And "ann" bought "A-1" for "120.00"
    And 30 days pass and the scheduler runs
    And "ann" has 120 available points and 0 pending

  Scenario: A member's status is read by storefronts, auditors, admins and the member
    When these callers read the status of "ann":
      | caller                   | expected status |
      | storefront               | 200             |
      | auditor                  | 200             |
      | admin                    | 200             |
      | member ann               | 200             |
      | member bob               | 403             |
      | anonymous caller         | 401             |
      | holder of an unknown key | 401             |
    Then each caller gets its expected status

  Scenario Outline: Only storefronts and admins post purchases
    When the <caller> posts purchase "A-2" of "10.00" for "ann"
    Then the response status is <status>
    And "ann" has 120 available points and <pending> pending

    Examples:
      | caller           | status | pending |
      | storefront       | 201    | 10      |
      | admin            | 201    | 10      |
      | auditor          | 403    | 0       |
      | member ann       | 403    | 0       |
      | anonymous caller | 401    | 0       |

  Scenario Outline: A member redeems its own points, never another member's
    When the <caller> redeems 20 points for "ann" as "R-1"
    Then the response status is <status>
    And "ann" has <available> available points and 0 pending

    Examples:
      | caller           | status | available |
      | member ann       | 201    | 100       |
      | storefront       | 201    | 100       |
      | admin            | 201    | 100       |
      | member bob       | 403    | 120       |
      | auditor          | 403    | 120       |
      | anonymous caller | 401    | 120       |

  Scenario Outline: Only storefronts and admins refund
    When the <caller> refunds "60.00" of order "A-1" as "RF-1"
    Then the response status is <status>
    And "ann" has <available> available points and 0 pending

    Examples:
      | caller     | status | available |
      | storefront | 201    | 60        |
      | admin      | 201    | 60        |
      | auditor    | 403    | 120       |
      | member ann | 403    | 120       |

  Scenario Outline: Only storefronts and admins cancel a redemption
    Given "ann" redeemed 100 points as "R-1"
    When the <caller> cancels redemption "R-1"
    Then the response status is <status>
    And "ann" has <available> available points and 0 pending

    Examples:
      | caller     | status | available |
      | storefront | 201    | 120       |
      | admin      | 201    | 120       |
      | auditor    | 403    | 20        |
      | member ann | 403    | 20        |

  Scenario Outline: Only storefronts and admins enrol members
    When the <caller> enrols "carol" with the email "carol@example.com"
    Then the response status is <status>
    And "carol" <enrolment>

    Examples:
      | caller     | status | enrolment                                   |
      | storefront | 201    | is enrolled with the email "carol@example.com" |
      | admin      | 201    | is enrolled with the email "carol@example.com" |
      | auditor    | 403    | is not enrolled                             |
      | member ann | 403    | is not enrolled                             |

  Scenario Outline: Only storefronts and admins mint member tokens
    When the <caller> mints a member token for "ann"
    Then the response status is <status>
    And the response <token>

    Examples:
      | caller     | status | token                                         |
      | storefront | 201    | carries a member token that expires in 1 hour |
      | admin      | 201    | carries a member token that expires in 1 hour |
      | auditor    | 403    | carries no member token                       |
      | member ann | 403    | carries no member token                       |

  Scenario: A member's event history is read by auditors, admins and the member
    When these callers read the events of "ann":
      | caller                   | expected status |
      | auditor                  | 200             |
      | admin                    | 200             |
      | member ann               | 200             |
      | member bob               | 403             |
      | storefront               | 403             |
      | anonymous caller         | 401             |
    Then each caller gets its expected status

  Scenario: The whole event log is read by auditors and admins
    When these callers read the event log:
      | caller                   | expected status |
      | auditor                  | 200             |
      | admin                    | 200             |
      | storefront               | 403             |
      | member ann               | 403             |
      | anonymous caller         | 401             |
    Then each caller gets its expected status
    And every caller who may read it finds these purchases in the event log:
      | member | order |
      | ann    | A-1   |

  Scenario Outline: Only an admin publishes a new program version
    When the <caller> publishes a program version in which the "bronze" tier multiplies points by "2.0"
    Then the response status is <status>
    And the program in force is version <version>

    Examples:
      | caller     | status | version |
      | admin      | 200    | 2       |
      | storefront | 403    | 1       |
      | auditor    | 403    | 1       |
      | member ann | 403    | 1       |

  Scenario: Every role reads the program in force
    When these callers read the program:
      | caller                   | expected status |
      | storefront               | 200             |
      | auditor                  | 200             |
      | admin                    | 200             |
      | member ann               | 200             |
      | anonymous caller         | 401             |
    Then each caller gets its expected status
    And every caller who may read it finds version 1 in force

  Scenario: A member token works until it expires
    Given the storefront minted a member token for "ann" valid for 60 seconds
    When 59 seconds pass
    And the member ann reads the status of "ann"
    Then the response status is 200
    When 1 second passes
    And the member ann reads the status of "ann"
    Then the response status is 401

  Scenario: A tampered member token is refused
    When the holder of a tampered member token for ann reads the status of "ann"
    Then the response status is 401
