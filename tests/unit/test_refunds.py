"""Refunds: cumulative rounded-up clawback, own lot first, negative balances, over-refunds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.errors import Conflict, InsufficientPoints, InvalidAmount, OverRefund, UnknownOrder
from domain.ledger import Ledger
from tests.answers import answers

from .storefront import Shop


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def test_clawback_is_cumulative_and_rounded_up(member: Shop) -> None:
    member.buy("o-1", "100.00", categories=["books"])  # 100 + 50 bonus = 150 points
    assert member.refund("o-1", "r-1", "33.33")["points_clawed_back"] == 50  # ceil(49.995)
    assert member.refund("o-1", "r-2", "33.33")["points_clawed_back"] == 50  # ceil(99.99) - 50
    assert member.refund("o-1", "r-3", "33.34")["points_clawed_back"] == 50  # 150 - 100
    points = member.points()
    assert (points["pending"], points["clawed_back"], points["lifetime_earned"]) == (0, 150, 150)


def test_small_refunds_never_take_back_more_than_ceil_of_the_share(member: Shop) -> None:
    member.buy("o-1", "3.00")  # 3 points
    assert member.refund("o-1", "r-1", "1.00")["points_clawed_back"] == 1  # ceil(1.00)
    assert member.refund("o-1", "r-2", "0.01")["points_clawed_back"] == 1  # ceil(1.01) - 1
    assert member.refund("o-1", "r-3", "0.01")["points_clawed_back"] == 0  # ceil(1.02) - 2
    assert member.refund("o-1", "r-4", "1.98")["points_clawed_back"] == 1  # 3 - 2


def test_a_full_refund_takes_back_everything_awarded(member: Shop) -> None:
    member.buy("o-0", "500.00")  # silver
    member.buy("o-1", "77.77", categories=["toys"])  # floor(77 x 1.25) = 96, + 50
    result = member.refund("o-1", "r-1")
    assert result["amount"] == "77.77"
    assert result["points_clawed_back"] == 146
    assert member.points()["pending"] == 500


def test_the_default_refund_amount_is_the_rest_of_the_order(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.refund("o-1", "r-1", "30.00")
    result = member.refund("o-1", "r-2")
    assert result["amount"] == "70.00"
    assert result["refunded_total"] == "100.00"
    assert result["refundable_amount"] == "0.00"
    assert member.points()["clawed_back"] == 100


def test_refunds_of_one_order_may_never_exceed_its_amount(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    member.refund("o-1", "r-1", "60.00")
    with pytest.raises(OverRefund):
        answers(ledger).refund("o-1", "r-2", Decimal("40.01"), None, "t")
    member.refund("o-1", "r-3", "40.00")
    with pytest.raises(OverRefund):
        answers(ledger).refund("o-1", "r-4", None, None, "t")
    with pytest.raises(OverRefund):
        answers(ledger).refund("o-1", "r-5", Decimal("0.01"), None, "t")
    assert answers(ledger).purchase("o-1")["refunded_amount"] == "100.00"
    assert len(member.events(kind="PurchaseRefunded")) == 2


@pytest.mark.parametrize("amount", ["0", "-1.00", "1.001"])
def test_a_refund_amount_must_be_a_valid_amount(member: Shop, ledger: Ledger, amount: str) -> None:
    member.buy("o-1", "100.00")
    with pytest.raises(InvalidAmount):
        answers(ledger).refund("o-1", "r-1", Decimal(amount), None, "t")


def test_a_refund_of_an_unknown_order_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownOrder):
        answers(ledger).refund("nope", "r-1", None, None, "t")


def test_the_same_refund_posted_again_is_recorded_once(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    first, created = answers(ledger).refund("o-1", "r-1", Decimal("10.00"), "damaged", "t")
    assert created
    member.at(1)
    again, created = answers(ledger).refund("o-1", "r-1", Decimal("10.0"), "damaged", "t")
    assert created is False
    assert again == first
    assert member.points()["clawed_back"] == 10
    assert answers(ledger).purchase("o-1")["refunded_amount"] == "10.00"


@pytest.mark.parametrize(
    ("amount", "reason"), [(Decimal("11.00"), "damaged"), (Decimal("10.00"), "late"), (None, None)]
)
def test_the_same_refund_id_with_different_content_is_a_conflict(
    member: Shop, ledger: Ledger, amount: Decimal | None, reason: str | None
) -> None:
    member.buy("o-1", "100.00")
    answers(ledger).refund("o-1", "r-1", Decimal("10.00"), "damaged", "t")
    with pytest.raises(Conflict):
        answers(ledger).refund("o-1", "r-1", amount, reason, "t")
    assert answers(ledger).purchase("o-1")["refunded_amount"] == "10.00"


def test_the_clawback_takes_from_the_purchase_own_lot_first(member: Shop) -> None:
    member.buy("o-1", "100.00")  # available day 30, expires day 760
    member.at(10).buy("o-2", "100.00")  # available day 40, expires day 770
    member.at(50).refund("o-2", "r-1", "50.00")
    member.at(760)
    assert member.points()["expired"] == 100, "the older lot was left whole"
    member.at(770)
    assert member.points()["expired"] == 150


def test_then_the_clawback_takes_from_the_oldest_other_lots(member: Shop) -> None:
    member.buy("o-1", "100.00")  # lot 0: available day 30, expires day 760
    member.at(10).buy("o-2", "100.00")  # lot 1: available day 40, expires day 770
    member.at(20).buy("o-3", "100.00")  # lot 2: available day 50, expires day 780
    member.at(60).redeem("red-1", points=180)  # lot 0 empty, lot 1 has 20 left
    member.refund("o-2", "r-1")  # 100: 20 from its own lot 1, then 80 from the oldest (lot 2)
    refund = member.events(kind="PurchaseRefunded")[0]["data"]
    assert refund["taken"] == {"purchase:o-2": 20, "purchase:o-3": 80}
    assert refund["debt"] == 0
    member.at(780)
    points = member.points()
    assert (points["expired"], points["available"]) == (20, 0)


def test_a_clawback_may_take_the_balance_below_zero_and_then_redeeming_is_refused(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    member.at(30).redeem("red-1", points=80)
    member.refund("o-1", "r-1")
    points = member.points()
    assert points["available"] == -80
    assert points["clawed_back"] == 100
    with pytest.raises(InsufficientPoints):
        answers(ledger).redeem("m1", "red-2", None, 1, "t")
    member.buy("o-2", "200.00")
    member.at(60)
    assert member.points()["available"] == 120, "the next lot repays the debt"
    member.redeem("red-3", points=120)
    assert member.points()["available"] == 0


def test_a_refund_claws_back_from_pending_points(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.buy("o-2", "50.00")
    member.at(5).refund("o-1", "r-1", "50.00")
    points = member.points()
    assert (points["pending"], points["available"]) == (100, 0)
    assert sorted(lot["points"] for lot in points["pending_lots"]) == [50, 50]


def test_a_refund_of_a_purchase_that_earned_nothing_claws_nothing(member: Shop) -> None:
    member.buy("o-0", "10.00")
    member.buy("o-1", "0.50")
    assert member.refund("o-1", "r-1")["points_clawed_back"] == 0
    assert member.points()["pending"] == 10


def test_a_repeated_refund_returns_the_first_response(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "600.00")  # silver, review day 365
    first, _ = answers(ledger).refund("o-1", "r-1", Decimal("50.00"), None, "t")
    assert (first["refundable_amount"], first["tier"], first["tier_changed"]) == (
        "550.00",
        "silver",
        False,
    )
    member.refund("o-1", "r-2", "20.00")
    member.at(400)  # the review on day 365 moved the member down since
    again, created = answers(ledger).refund("o-1", "r-1", Decimal("50.00"), None, "t")
    assert created is False
    assert again == first
    ledger.record_due()
    assert answers(ledger).refund("o-1", "r-1", Decimal("50.00"), None, "t")[0] == first
    assert member.tier() == "bronze"


def test_a_repeated_refund_that_downgraded_says_so_again(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "300.00")
    member.buy("o-2", "250.00")  # silver
    first, _ = answers(ledger).refund("o-2", "r-1", None, None, "t")
    assert (first["tier"], first["tier_changed"]) == ("bronze", True)
    member.at(1).buy("o-3", "600.00")  # silver again
    again, _ = answers(ledger).refund("o-2", "r-1", None, None, "t")
    assert again == first


def test_a_refund_answers_with_the_tier_after_a_review_it_made_due(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "500.00")  # silver, review day 365
    member.at(300).buy("o-2", "1500.00")  # gold, review day 665
    # Undoing the gold upgrade restores silver and its review of day 365, which is past:
    # the review runs at once and finds no spend in (35, 400].
    member.at(400)
    first, _ = answers(ledger).refund("o-2", "r-1", None, None, "t")
    assert (first["tier"], first["tier_changed"]) == ("bronze", True)
    assert member.tier() == "bronze"
    downgrades = [e["data"] for e in member.events(kind="TierDowngraded")]
    assert [(d["from_tier"], d["to_tier"], d["reason"]) for d in downgrades] == [
        ("gold", "silver", "refund"),
        ("silver", "bronze", "review"),
    ]
    member.at(401)
    assert answers(ledger).refund("o-2", "r-1", None, None, "t")[0] == first
