"""Redemptions: rewards from the catalogue or plain points, idempotent, cancellable."""

from __future__ import annotations

import pytest

from domain.errors import (
    Conflict,
    InsufficientPoints,
    InvalidInput,
    UnknownMember,
    UnknownRedemption,
    UnknownReward,
)
from domain.ledger import Ledger
from tests.answers import answers

from .storefront import Shop, day


@pytest.fixture
def member(shop: Shop) -> Shop:
    """A member with 1,200 available points from day 30."""
    shop.enrol("m1")
    shop.buy("o-1", "1200.00")
    shop.at(30)
    return shop


def test_a_reward_from_the_catalogue_costs_its_points(member: Shop) -> None:
    result = member.redeem("red-1", reward="coffee")
    assert result["points"] == 500
    assert result["reward"] == "coffee"
    assert result["points_available"] == 700
    assert result["redeemed_at"] == day(30).isoformat()
    assert result["cancelled_at"] is None
    points = member.points()
    assert (points["available"], points["redeemed"]) == (700, 500)


def test_an_unknown_reward_is_refused(member: Shop, ledger: Ledger) -> None:
    with pytest.raises(UnknownReward):
        answers(ledger).redeem("m1", "red-1", "yacht", None, "t")
    assert member.points()["redeemed"] == 0


def test_a_plain_points_amount_can_be_redeemed(member: Shop) -> None:
    assert member.redeem("red-1", points=1200)["points_available"] == 0


@pytest.mark.parametrize("points", [None, 0, -5])
def test_a_redemption_needs_a_positive_amount_or_a_reward(
    member: Shop, ledger: Ledger, points: int | None
) -> None:
    with pytest.raises(InvalidInput):
        answers(ledger).redeem("m1", "red-1", None, points, "t")


def test_insufficient_available_points_is_an_error(member: Shop, ledger: Ledger) -> None:
    member.buy("o-2", "500.00")  # pending: does not count
    with pytest.raises(InsufficientPoints):
        answers(ledger).redeem("m1", "red-1", None, 1201, "t")
    member.redeem("red-2", reward="voucher-10")
    with pytest.raises(InsufficientPoints):
        answers(ledger).redeem("m1", "red-3", "coffee", None, "t")
    assert member.points()["available"] == 200


def test_pending_points_cannot_be_redeemed(shop: Shop, ledger: Ledger) -> None:
    shop.enrol("m1")
    shop.buy("o-1", "1000.00")
    shop.at(29)
    with pytest.raises(InsufficientPoints):
        answers(ledger).redeem("m1", "red-1", None, 1, "t")


def test_a_redemption_for_an_unknown_member_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownMember):
        answers(ledger).redeem("ghost", "red-1", None, 1, "t")


def test_the_same_redemption_posted_again_is_recorded_once(member: Shop, ledger: Ledger) -> None:
    first, created = answers(ledger).redeem("m1", "red-1", "coffee", None, "t")
    assert created
    member.at(31)
    again, created = answers(ledger).redeem("m1", "red-1", "coffee", None, "t")
    assert created is False
    assert again["points"] == first["points"] == 500
    assert again["redeemed_at"] == first["redeemed_at"]
    assert member.points()["available"] == 700
    plain, _ = answers(ledger).redeem("m1", "red-2", None, 100, "t")
    again, created = answers(ledger).redeem("m1", "red-2", None, 100, "t")
    assert created is False
    assert member.points()["available"] == 600


@pytest.mark.parametrize(("reward", "points"), [("free-shipping", None), (None, 500), (None, 7)])
def test_the_same_redemption_id_with_different_content_is_a_conflict(
    member: Shop, ledger: Ledger, reward: str | None, points: int | None
) -> None:
    answers(ledger).redeem("m1", "red-1", "coffee", None, "t")
    with pytest.raises(Conflict):
        answers(ledger).redeem("m1", "red-1", reward, points, "t")
    assert member.points()["redeemed"] == 500


def test_a_redemption_id_of_another_member_is_a_conflict(shop: Shop, ledger: Ledger) -> None:
    shop.enrol("m1")
    shop.enrol("m2")
    shop.buy("o-1", "1000.00", member_id="m1")
    shop.buy("o-2", "1000.00", member_id="m2")
    shop.at(30).redeem("red-1", points=100, member_id="m1")
    with pytest.raises(Conflict):
        answers(ledger).redeem("m2", "red-1", None, 100, "t")
    assert shop.points("m2")["available"] == 1000


def test_a_redemption_id_of_another_member_is_a_conflict_even_if_unaffordable(
    member: Shop, ledger: Ledger
) -> None:
    member.redeem("red-1", points=100)
    member.enrol("m2")
    with pytest.raises(Conflict):
        answers(ledger).redeem("m2", "red-1", None, 100, "t")


def test_cancelling_a_redemption_returns_the_points(member: Shop, ledger: Ledger) -> None:
    member.redeem("red-1", reward="coffee")
    member.at(40)
    result, created = answers(ledger).cancel_redemption("red-1", "t")
    assert created
    assert result["cancelled_at"] == day(40).isoformat()
    assert result["points_available"] == 1200
    points = member.points()
    assert (points["available"], points["redeemed"]) == (1200, 0)
    again, created = answers(ledger).cancel_redemption("red-1", "t")
    assert created is False
    assert again == result
    assert member.points()["available"] == 1200


def test_cancelled_points_keep_their_original_expiry(shop: Shop, ledger: Ledger) -> None:
    shop.enrol("m1")
    shop.buy("o-1", "100.00")  # available day 30, expires day 760
    shop.at(10).buy("o-2", "100.00")  # available day 40, expires day 770
    shop.at(50).redeem("red-1", points=150)  # 100 from lot 0, 50 from lot 1
    shop.at(700)
    answers(ledger).cancel_redemption("red-1", "t")
    shop.at(760)
    points = shop.points()
    assert (points["available"], points["expired"]) == (100, 100)
    shop.at(770)
    points = shop.points()
    assert (points["available"], points["expired"]) == (0, 200)


def test_a_cancellation_after_the_original_expiry_returns_expired_points(
    shop: Shop, ledger: Ledger
) -> None:
    shop.enrol("m1")
    shop.buy("o-1", "100.00")  # available day 30, expires day 760
    shop.at(50).redeem("red-1", points=60)
    shop.at(800)
    answers(ledger).cancel_redemption("red-1", "t")
    points = shop.points()
    assert (points["available"], points["redeemed"], points["expired"]) == (0, 0, 100)


def test_cancelled_points_repay_a_clawback_debt(member: Shop, ledger: Ledger) -> None:
    member.redeem("red-1", points=1000)
    member.refund("o-1", "r-1")  # 1,200 clawed back, only 200 left: debt 1,000
    assert member.points()["available"] == -1000
    answers(ledger).cancel_redemption("red-1", "t")
    assert member.points()["available"] == 0
    member.at(760)  # the returned points went to the debt, so none are left to expire
    points = member.points()
    assert (points["available"], points["expired"]) == (0, 0)


def test_cancelling_an_unknown_redemption_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownRedemption):
        answers(ledger).cancel_redemption("nope", "t")


def test_a_repeated_redemption_returns_the_first_response(member: Shop, ledger: Ledger) -> None:
    member.buy("o-2", "300.00")  # silver: 375 points, available day 60
    first, _ = answers(ledger).redeem("m1", "red-1", "coffee", None, "t")
    assert first["points_available"] == 700
    member.redeem("red-2", points=100)
    member.at(60)
    again, created = answers(ledger).redeem("m1", "red-1", "coffee", None, "t")
    assert created is False
    assert again == first, "later redemptions and lots do not change the answer"
    ledger.record_due()
    assert answers(ledger).redeem("m1", "red-1", "coffee", None, "t")[0] == first


def test_a_repeated_cancellation_returns_the_first_response(member: Shop, ledger: Ledger) -> None:
    member.buy("o-2", "300.00")  # silver: 375 points, available day 60
    member.redeem("red-1", reward="coffee")
    first, _ = answers(ledger).cancel_redemption("red-1", "t")
    assert first["points_available"] == 1200
    member.at(60).redeem("red-2", points=50)
    again, created = answers(ledger).cancel_redemption("red-1", "t")
    assert created is False
    assert again == first
    assert member.points()["available"] == 1525


def test_a_cancellation_answers_with_the_balance_after_returned_points_expire(
    shop: Shop, ledger: Ledger
) -> None:
    shop.enrol("m1")
    shop.buy("o-1", "100.00")  # available day 30, expires day 760
    shop.at(5).buy("o-2", "100.00", guarantee="outcome-365")  # available day 370, expires 1100
    shop.at(50).redeem("red-1", points=60)
    shop.at(800)
    result, _ = answers(ledger).cancel_redemption("red-1", "t")
    assert result["points_available"] == 100 == shop.points()["available"]


def test_lots_given_back_keep_distinct_names_whatever_the_redemption_ids(shop: Shop) -> None:
    """A returned lot is named by its redemption and the lot it came from; ids may hold ':', so
    'a' cancelled from 'b''s returned lot and 'a:redemption:b' must still name two lots."""
    shop.enrol("m1")
    shop.buy("o-1", "20.00")
    shop.at(30)
    shop.redeem("a:redemption:b", points=10)
    shop.redeem("b", points=10)
    answers(shop.ledger).cancel_redemption("b", "test")  # 10 back, in a lot of its own
    shop.redeem("a", points=10)  # from that lot: o-1's is empty
    answers(shop.ledger).cancel_redemption("a", "test")
    answers(shop.ledger).cancel_redemption("a:redemption:b", "test")
    assert shop.points()["available"] == 20
    assert shop.redeem("all", points=20)["points_available"] == 0
    cancelled = shop.events(kind="RedemptionCancelled")
    assert [event["data"]["returned"][0]["from_lot"] for event in cancelled] == [
        "purchase:o-1",
        "redemption:b#purchase:o-1",
        "purchase:o-1",
    ]
