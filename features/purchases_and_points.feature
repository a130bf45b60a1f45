Feature: Purchases earn points
  A purchase earns 1 point per whole unit of currency of its net amount, floored. The tier
  the member held before the purchase multiplies it (bronze 1.0, silver 1.25, gold 1.5,
  platinum 2.0) and the result is floored again. A purchase whose line items bring a category
  the member has never bought before earns a cross-sell bonus of 50 points, once per purchase
  and not multiplied. The exact points awarded are recorded with the purchase.

  Background:
    Given the program's defaults
    And it is 2026-01-05T09:00:00+00:00
    And member "ann" is enrolled

  Scenario: A purchase earns one point per whole unit of currency, floored
    When the storefront posts purchase "A-1" of "120.99" for "ann"
    Then the response status is 201
    And the purchase earns 120 points and 0 bonus points
    And purchase "A-1" shows 120 points awarded and 0 bonus points
    And "ann" has 0 available points and 120 pending

  Scenario: The tier multiplies the floored amount, and the result is floored again
    Given "ann" bought "A-1" for "500.00"
    And "ann" holds the "silver" tier
    When the storefront posts purchase "A-2" of "99.99" for "ann"
    # floor(floor(99.99) x 1.25) = floor(99 x 1.25) = floor(123.75) = 123
    Then the purchase earns 123 points and 0 bonus points
    And "ann" has 0 available points and 623 pending

  Scenario Outline: Each tier multiplies the base points by its own rate
    Given "ann" bought "A-0" for "<earlier spend>"
    And "ann" holds the "<tier>" tier
    When the storefront posts purchase "A-1" of "100.00" for "ann"
    Then the purchase earns <points> points and 0 bonus points

    Examples:
      | earlier spend | tier     | points |
      | 1.00          | bronze   | 100    |
      | 500.00        | silver   | 125    |
      | 2000.00       | gold     | 150    |
      | 5000.00       | platinum | 200    |

  Scenario: A purchase that upgrades the tier earns at the old rate; the next one at the new
    Given "ann" bought "A-1" for "450.00"
    When the storefront posts purchase "A-2" of "100.00" for "ann"
    Then the purchase earns 100 points and 0 bonus points
    And the purchase moves "ann" up to "silver"
    When the storefront posts purchase "A-3" of "100.00" for "ann"
    Then the purchase earns 125 points and 0 bonus points
    And the purchase leaves "ann" at "silver"
    And "ann" has 0 available points and 675 pending

  Scenario: A category the member has never bought earns a 50-point bonus, once per purchase
    When the storefront posts purchase "A-1" of "30.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 2        | 10.00      |
      | C-1 | cups     | 1        | 10.00      |
    Then the purchase earns 30 points and 50 bonus points
    When the storefront posts purchase "A-2" of "20.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 2        | 10.00      |
    Then the purchase earns 20 points and 0 bonus points
    When the storefront posts purchase "A-3" of "15.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-2 | tea      | 1        | 10.00      |
      | P-1 | pots     | 1        | 5.00       |
    Then the purchase earns 15 points and 50 bonus points
    And "ann" has 0 available points and 165 pending

  Scenario: The cross-sell bonus is not multiplied by the tier
    Given "ann" bought "A-1" for "2000.00"
    And "ann" holds the "gold" tier
    When the storefront posts purchase "A-2" of "100.00" for "ann" with items:
      | sku | category | quantity | unit_price |
      | T-1 | tea      | 1        | 100.00     |
    # base floor(100 x 1.5) = 150; the bonus stays 50
    Then the purchase earns 150 points and 50 bonus points
    And "ann" has 0 available points and 2200 pending

  Scenario: The largest allowed amount, 1,000,000.00, is accepted
    When the storefront posts purchase "A-1" of "1000000.00" for "ann"
    Then the response status is 201
    And the purchase earns 1000000 points and 0 bonus points
    And the purchase moves "ann" up to "platinum"

  Scenario Outline: An amount that breaks the rules is refused and earns nothing
    When the storefront posts purchase "A-1" of "<amount>" for "ann"
    Then the response status is 422 and the problem names the field "amount"
    And "ann" has 0 available points and 0 pending

    Examples: zero, negative, too precise, too large, not a number
      | amount     |
      | 0.00       |
      | -5.00      |
      | 10.005     |
      | 1000000.01 |
      | ten        |

  Scenario: Money given as a JSON number instead of a decimal string is refused
    When the storefront posts purchase "A-1" of the JSON number 120.5 for "ann"
    Then the response status is 422 and the problem names the field "amount"
    And "ann" has 0 available points and 0 pending

  Scenario: A purchase in another currency than the program's is refused
    When the storefront posts purchase "A-1" of "120.00" in "EUR" for "ann"
    Then the response status is 422 and the problem names the field "currency"
    And "ann" has 0 available points and 0 pending

  Scenario: A purchase dated without a UTC offset is refused
    When the storefront posts purchase "A-1" of "120.00" for "ann" dated "2026-01-05T08:00:00"
    Then the response status is 422 and the problem names the field "occurred_at"
    And "ann" has 0 available points and 0 pending

  Scenario: A purchase for a member who is not enrolled is refused
    When the storefront posts purchase "A-1" of "120.00" for "zoe"
    Then the response status is 404
