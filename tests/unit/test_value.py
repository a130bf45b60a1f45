"""Customer value: net contribution, quartile classes, quintile scores, the Pareto share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.value import (
    MemberFacts,
    average_order_value,
    customer_value,
    net_contribution,
    pareto_share,
    purchases_per_year,
    quintile_scores,
    recency_days,
    value_classes,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def d(*amounts: str | int) -> list[Decimal]:
    return [Decimal(a) for a in amounts]


def facts(member_id: str, *amounts: str, days: tuple[int, ...] = (), **kwargs: Any) -> MemberFacts:
    when = days or tuple(range(len(amounts)))
    found = MemberFacts(member_id, T0, **kwargs)
    for a, n in zip(amounts, when, strict=True):
        found.add_purchase(T0 + timedelta(days=n), Decimal(a))
    return found


# Net contribution.


def test_net_contribution_takes_off_refunds_payouts_and_redeemed_points() -> None:
    member = facts(
        "m", "100.00", "50.00", refunds=Decimal("20.00"), guarantee_payouts=Decimal("30.00"),
        points_redeemed=250,
    )  # fmt: skip
    assert net_contribution(member) == Decimal("97.50")  # 150 - 20 - 30 - 250 x 0.01
    assert net_contribution(member, point_value=Decimal("0.02")) == Decimal("95.00")


def test_a_double_guarantee_payout_makes_the_contribution_negative() -> None:
    assert net_contribution(facts("m", "100.00", guarantee_payouts=Decimal("200.00"))) == -100


# Value classes: the share of members strictly better < 1/4 A, < 2/4 B, < 3/4 C, else D.


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ((10,), "A"),
        ((20, 10), "AC"),
        ((30, 20, 10), "ABC"),
        ((40, 30, 20, 10), "ABCD"),
        ((50, 40, 30, 20, 10), "AABCD"),
        ((80, 70, 60, 50, 40, 30, 20, 10), "AABBCCDD"),
        ((10, 30, 20, 40), "DBCA"),  # the input order is kept
    ],
)
def test_value_classes_by_quartile_of_standing(amounts: tuple[int, ...], expected: str) -> None:
    assert "".join(value_classes(d(*amounts))) == expected


def test_tied_members_share_the_better_class() -> None:
    assert value_classes(d(10, 10, 10, 10)) == ["A"] * 4
    assert value_classes(d(30, 20, 20, 10)) == ["A", "B", "B", "D"]
    # 3 of 8 strictly better puts the ties at 3/8 (B), not spread over B and C.
    assert value_classes(d(80, 70, 60, 50, 50, 50, 20, 10)) == list("AABBBBDD")


def test_a_negative_contribution_is_always_d() -> None:
    assert value_classes(d(-5)) == ["D"]
    assert value_classes(d(-1, -2, -3)) == ["D", "D", "D"]
    assert value_classes(d(100, -1)) == ["A", "D"]
    assert value_classes(d(0)) == ["A"]  # zero is not negative


# RFM scores: 5 - floor(5 x the share strictly better).


def test_quintile_scores_of_ten_distinct_values() -> None:
    assert quintile_scores(list(range(10, 0, -1))) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_quintile_scores_of_few_members() -> None:
    assert quintile_scores([7]) == [5]
    assert quintile_scores([2, 1]) == [5, 3]  # 1/2 better: 5 - floor(2.5)
    assert quintile_scores([3, 2, 1]) == [5, 4, 2]  # 1/3 -> 5 - 1, 2/3 -> 5 - 3
    assert quintile_scores([5, 4, 3, 2, 1]) == [5, 4, 3, 2, 1]


def test_recency_scores_reward_fewer_days_and_ties_share_the_better_score() -> None:
    assert quintile_scores([0, 10, 10, 30], higher_is_better=False) == [5, 4, 4, 2]
    assert quintile_scores([3, 3, 3], higher_is_better=False) == [5, 5, 5]


def test_recency_is_whole_days_since_the_last_purchase() -> None:
    member = facts("m", "10.00", "10.00", days=(0, 3))
    assert recency_days(member, T0 + timedelta(days=10, hours=23)) == 7
    # An order dated a few minutes ahead (within the tolerance) is 0 days old, not -1.
    assert recency_days(member, T0 + timedelta(days=3) - timedelta(minutes=2)) == 0
    assert recency_days(facts("p"), T0) is None


# The Pareto share: the top ceil(N / 5) members.


@pytest.mark.parametrize(
    ("amounts", "share"),
    [
        ((100,), "1.0000"),
        ((80, 10, 5, 5), "0.8000"),  # N = 4: the top 1
        ((50, 20, 10, 10, 5, 5), "0.7000"),  # N = 6: the top 2
        ((40, 30, 10, 5, 5, 4, 3, 2, 1, 0), "0.7000"),  # N = 10: the top 2
        ((10, 20, 70), "0.7000"),  # the input order does not matter
        ((2, 1), "0.6667"),  # half-even to 4 places
        ((120, -20), "1.2000"),  # a negative member lifts the share above 1
    ],
)
def test_pareto_share(amounts: tuple[int, ...], share: str) -> None:
    assert pareto_share(d(*amounts)) == Decimal(share)


def test_no_pareto_share_without_a_positive_total() -> None:
    assert pareto_share([]) is None
    assert pareto_share(d(-10, -20)) is None
    assert pareto_share(d(10, -10)) is None


# Realised lifetime value.


def test_average_order_value_and_purchases_per_year_of_tenure() -> None:
    member = facts("m", "30.00", "60.00")
    assert average_order_value(member) == Decimal("45.00")
    assert purchases_per_year(member, T0 + timedelta(days=73)) == Decimal("10.00")  # 2 x 365 / 73
    assert purchases_per_year(member, T0 + timedelta(hours=5)) == Decimal("730.00")  # one day
    assert average_order_value(facts("p")) is None
    assert purchases_per_year(facts("p"), T0 + timedelta(days=10)) == Decimal("0.00")


def test_customer_value_ranks_the_buyers_only_and_lists_the_others_last() -> None:
    as_of = T0 + timedelta(days=10)
    found = customer_value(
        [
            facts("zed"),
            facts("bob", "100.00", days=(2,)),
            facts("ann", "300.00", "100.00", days=(0, 8), points_redeemed=1000),
            facts("dan", "50.00", days=(1,), guarantee_payouts=Decimal("100.00")),
            facts("cat", "100.00", days=(9,)),
        ],
        as_of,
    )
    assert found.members_with_purchases == 4
    assert found.pareto_top20_share == Decimal("0.7222")  # ceil(4 / 5) = 1: 390 of 540
    rows = [
        (v.member_id, v.value_class, v.net_contribution, v.recency_days, v.recency, v.frequency,
         v.monetary)
        for v in found.members
    ]  # fmt: skip
    assert rows == [
        ("ann", "A", Decimal("390.00"), 2, 4, 5, 5),
        ("bob", "B", Decimal("100.00"), 8, 3, 4, 4),
        ("cat", "B", Decimal("100.00"), 1, 5, 4, 4),
        ("dan", "D", Decimal("-50.00"), 9, 2, 4, 2),
        ("zed", None, Decimal("0"), None, None, None, None),
    ]
