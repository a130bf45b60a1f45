"""Purchases and points: base earning, tier multiplier, cross-sell bonus, checks, idempotency."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.errors import (
    Conflict,
    InvalidAmount,
    InvalidInput,
    OccurredAtOutOfRange,
    UnknownGuarantee,
    UnknownMember,
    WrongCurrency,
)
from domain.ledger import Ledger
from domain.members import LineItem
from domain.program import ProgramRules
from tests.answers import answers

from .storefront import Shop, day, items


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


@pytest.mark.parametrize(
    ("amount", "points"),
    [("0.99", 0), ("1.00", 1), ("10.99", 10), ("499.99", 499), ("1000000.00", 1_000_000)],
)
def test_bronze_earns_one_point_per_whole_unit_floored(
    member: Shop, amount: str, points: int
) -> None:
    result = member.buy("o-1", amount)
    assert result["points_awarded"] == points
    assert result["bonus_points"] == 0
    assert member.points()["pending"] == points


def test_the_purchase_that_upgrades_earns_at_the_old_rate_the_next_at_the_new(
    member: Shop,
) -> None:
    crossing = member.buy("o-1", "500.99")
    assert crossing["tier"] == "silver"
    assert crossing["tier_changed"] is True
    assert crossing["points_awarded"] == 500  # bronze: floor(500.99) x 1.0
    following = member.buy("o-2", "101.99")
    assert following["points_awarded"] == 126  # silver: floor(101 x 1.25) = floor(126.25)
    assert following["tier_changed"] is False


@pytest.mark.parametrize(
    ("spend", "tier", "amount", "points"),
    [
        ("500.00", "silver", "3.00", 3),  # floor(3 x 1.25) = floor(3.75)
        ("2000.00", "gold", "3.00", 4),  # floor(3 x 1.5) = floor(4.5)
        ("5000.00", "platinum", "3.99", 6),  # floor(floor(3.99) x 2.0)
        ("2000.00", "gold", "0.99", 0),  # floor(0.99) = 0 before multiplying, not floor(1.485)
    ],
)
def test_tier_multiplier_is_applied_to_the_floored_amount_and_floored_again(
    member: Shop, spend: str, tier: str, amount: str, points: int
) -> None:
    member.buy("o-1", spend)
    assert member.tier() == tier
    assert member.buy("o-2", amount)["points_awarded"] == points


@pytest.mark.parametrize(("spend", "points"), [("0.00", 120), ("500.00", 150)])
def test_a_program_may_award_several_points_per_whole_unit(
    member: Shop, ledger: Ledger, spend: str, points: int
) -> None:
    """12.99 at 10 points a unit: floor(12.99) x 10 = 120, times the tier's multiplier."""
    rules = ProgramRules.from_dict({"earning": {"points_per_currency_unit": 10}})
    assert rules.points_per_currency_unit == 10
    assert rules.to_dict()["earning"]["points_per_currency_unit"] == 10
    ledger.publish_program(rules, "test")
    if spend != "0.00":
        member.buy("o-0", spend)
    assert member.buy("o-1", "12.99")["points_awarded"] == points


@pytest.mark.parametrize("per_unit", [0, -1, 10_001, "2", 1.5, True])
def test_points_per_unit_must_be_a_whole_number_from_1_to_10000(per_unit: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        ProgramRules.from_dict({"earning": {"points_per_currency_unit": per_unit}})
    assert list(refused.value.errors) == ["earning.points_per_currency_unit"]


def test_a_new_category_earns_the_cross_sell_bonus_once_per_purchase_not_multiplied(
    member: Shop,
) -> None:
    member.buy("o-0", "2000.00")  # gold, multiplier 1.5
    result = member.buy("o-1", "10.00", categories=["books", "toys", "garden"])
    assert result["points_awarded"] == 15
    assert result["bonus_points"] == 50, "three new categories still earn one bonus of 50"
    assert member.points()["pending"] == 2000 + 15 + 50


def test_the_bonus_is_only_for_a_category_never_bought_before(member: Shop) -> None:
    assert member.buy("o-1", "10.00", categories=["books"])["bonus_points"] == 50
    assert member.buy("o-2", "10.00", categories=["books"])["bonus_points"] == 0
    assert member.buy("o-3", "10.00", categories=["books", "toys"])["bonus_points"] == 50
    assert member.buy("o-4", "10.00", categories=["toys", "books"])["bonus_points"] == 0
    assert member.buy("o-5", "10.00")["bonus_points"] == 0, "no line items, no bonus"


def test_a_refunded_purchase_still_counts_as_a_category_bought(member: Shop) -> None:
    member.buy("o-1", "10.00", categories=["books"])
    member.refund("o-1", "r-1")
    assert member.buy("o-2", "10.00", categories=["books"])["bonus_points"] == 0


def test_categories_are_per_member(member: Shop) -> None:
    member.enrol("m2")
    member.buy("o-1", "10.00", categories=["books"])
    assert member.buy("o-2", "10.00", member_id="m2", categories=["books"])["bonus_points"] == 50


def test_the_recorded_purchase_keeps_amount_items_and_program_version(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "12.5", categories=["books"], guarantee="trial-90")
    view = answers(ledger).purchase("o-1")
    assert view["member_id"] == "m1"
    assert view["amount"] == "12.50"
    assert view["program_version"] == 1
    assert view["items"] == [
        {"sku": "sku-books", "category": "books", "quantity": 1, "unit_price": "1.00"}
    ]
    assert view["guarantee"]["policy"] == "trial-90"
    assert view["guarantee"]["expires_at"] == day(90).isoformat()
    assert view["points_awarded"] == 12
    assert view["bonus_points"] == 50


# Validation.


def test_a_purchase_in_another_currency_is_refused(member: Shop, ledger: Ledger) -> None:
    with pytest.raises(WrongCurrency):
        answers(ledger).record_purchase("o-1", "m1", Decimal("10"), "EUR", None, [], None, "test")
    assert member.events(kind="PurchaseRecorded") == []


@pytest.mark.parametrize(
    "amount", ["10.001", "0", "0.00", "-5.00", "1000000.01", "NaN", "Infinity"]
)
def test_amounts_out_of_the_rules_are_refused(member: Shop, ledger: Ledger, amount: str) -> None:
    with pytest.raises(InvalidAmount):
        answers(ledger).record_purchase("o-1", "m1", Decimal(amount), "USD", None, [], None, "test")
    assert member.events(kind="PurchaseRecorded") == []


def test_an_unknown_guarantee_policy_is_refused(member: Shop, ledger: Ledger) -> None:
    with pytest.raises(UnknownGuarantee):
        answers(ledger).record_purchase(
            "o-1", "m1", Decimal("10"), "USD", None, [], "lifetime", "test"
        )


def test_a_purchase_for_an_unknown_member_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownMember):
        answers(ledger).record_purchase(
            "o-1", "ghost", Decimal("10"), "USD", None, [], None, "test"
        )


def test_occurred_at_may_be_at_most_five_minutes_ahead(member: Shop, ledger: Ledger) -> None:
    now = day(0)
    with pytest.raises(OccurredAtOutOfRange):
        answers(ledger).record_purchase(
            "o-1", "m1", Decimal("10"), "USD", now + timedelta(minutes=5, seconds=1), [], None, "t"
        )
    result = member.buy("o-2", "10.00", occurred_at=now + timedelta(minutes=5))
    assert result["occurred_at"] == (now + timedelta(minutes=5)).isoformat()


def test_occurred_at_may_be_at_most_two_years_back(member: Shop, ledger: Ledger) -> None:
    member.at(800)
    now = day(800)
    with pytest.raises(OccurredAtOutOfRange):
        answers(ledger).record_purchase(
            "o-1", "m1", Decimal("10"), "USD", now - timedelta(days=730, seconds=1), [], None, "t"
        )
    result = member.buy("o-2", "10.00", occurred_at=now - timedelta(days=730))
    assert result["occurred_at"] == (now - timedelta(days=730)).isoformat()


# Idempotency and order ownership.


def test_the_same_order_posted_again_returns_the_purchase_without_recording_it_twice(
    member: Shop, ledger: Ledger
) -> None:
    books = items("books")
    first, created = answers(ledger).record_purchase(
        "o-1", "m1", Decimal("20.00"), "USD", day(0), books, "satisfaction", "t"
    )
    assert created
    member.at(3)
    again, created = answers(ledger).record_purchase(
        "o-1", "m1", Decimal("20.0"), "USD", day(0), books, "satisfaction", "t"
    )
    assert created is False
    assert again == first
    assert len(member.events(kind="PurchaseRecorded")) == 1
    assert member.points()["pending"] == 70


@pytest.mark.parametrize(
    "change",
    [
        {"amount": Decimal("21.00")},
        {"items": [LineItem("sku-toys", "toys", 1, Decimal("1.00"))]},
        {"guarantee": None},
        {"occurred_at": day(0) - timedelta(hours=1)},
    ],
)
def test_the_same_order_with_different_content_is_a_conflict(
    member: Shop, ledger: Ledger, change: dict[str, Any]
) -> None:
    original: dict[str, Any] = {
        "amount": Decimal("20.00"),
        "occurred_at": day(0),
        "items": items("books"),
        "guarantee": "satisfaction",
    }

    def post(content: dict[str, Any]) -> None:
        answers(ledger).record_purchase(
            "o-1",
            "m1",
            content["amount"],
            "USD",
            content["occurred_at"],
            content["items"],
            content["guarantee"],
            "t",
        )

    post(original)
    with pytest.raises(Conflict):
        post({**original, **change})
    assert len(member.events(kind="PurchaseRecorded")) == 1


def test_an_order_id_is_unique_in_the_program_not_per_member(member: Shop, ledger: Ledger) -> None:
    member.enrol("m2")
    member.buy("o-1", "20.00", member_id="m1")
    with pytest.raises(Conflict):
        answers(ledger).record_purchase("o-1", "m2", Decimal("20.00"), "USD", None, [], None, "t")
    assert member.events("m2", "PurchaseRecorded") == []
    assert member.points("m2")["pending"] == 0
    assert answers(ledger).purchase("o-1")["member_id"] == "m1"


def test_an_order_id_of_another_member_is_a_conflict_before_any_other_check(
    member: Shop, ledger: Ledger
) -> None:
    member.enrol("m2")
    member.buy("o-1", "20.00", member_id="m1")
    with pytest.raises(Conflict):
        answers(ledger).record_purchase(
            "o-1", "m2", Decimal("20.00"), "USD", day(0) + timedelta(hours=1), [], None, "t"
        )


# Late-arriving orders.


def test_a_late_order_keeps_occurred_at_but_takes_effect_at_the_latest_business_time(
    member: Shop, ledger: Ledger
) -> None:
    member.at(10).buy("o-1", "10.00")
    result = member.buy("o-2", "10.00", occurred_at=day(4))
    assert result["occurred_at"] == day(4).isoformat()
    assert result["points_available_at"] == day(40).isoformat(), "the window runs from day 10"
    view = answers(ledger).purchase("o-2")
    assert view["occurred_at"] == day(4).isoformat()
    assert view["effective_at"] == day(10).isoformat()
    event = member.events(kind="PurchaseRecorded")[-1]
    assert event["data"]["occurred_at"] == day(4).isoformat()
    assert event["data"]["at"] == day(10).isoformat()


def test_an_order_dated_in_the_past_with_no_later_change_takes_effect_when_it_happened(
    member: Shop, ledger: Ledger
) -> None:
    member.at(10)
    result = member.buy("o-1", "10.00", occurred_at=day(4))
    assert result["points_available_at"] == day(34).isoformat()
    assert answers(ledger).purchase("o-1")["effective_at"] == day(4).isoformat()
