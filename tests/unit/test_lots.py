"""Point lots: pending through the return or guarantee window, then available, then expired."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import pytest

from adapters.vault import Vault
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import Terms, member_uuid
from domain.program import ProgramRules
from tests.answers import answers

from .storefront import IN_MEMORY, Shop, day


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def test_points_are_pending_until_the_30_day_return_window_ends(member: Shop) -> None:
    member.buy("o-1", "120.00")
    member.at(29.99)
    points = member.points()
    assert (points["available"], points["pending"]) == (0, 120)
    assert points["pending_lots"] == [{"points": 120, "available_at": day(30).isoformat()}]
    member.at(30)
    points = member.points()
    assert (points["available"], points["pending"]) == (120, 0)
    assert points["pending_lots"] == []


@pytest.mark.parametrize(
    ("policy", "days"),
    [("satisfaction", 30), ("double", 30), ("plus-10", 60), ("trial-90", 90), ("outcome-365", 365)],
)
def test_a_guarantee_window_longer_than_the_return_window_keeps_points_pending(
    member: Shop, policy: str, days: int
) -> None:
    result = member.buy("o-1", "80.00", guarantee=policy)
    assert result["points_available_at"] == day(days).isoformat()
    member.at(days - 0.001)
    assert member.points()["pending"] == 80
    member.at(days)
    assert member.points()["available"] == 80


def test_a_guarantee_window_shorter_than_the_return_window_does_not_shorten_it(
    member: Shop, ledger: Ledger
) -> None:
    ledger.publish_program(replace(ProgramRules(), return_window_days=45), "t")
    result = member.buy("o-1", "80.00", guarantee="satisfaction")  # a 30-day guarantee
    assert result["points_available_at"] == day(45).isoformat()


def test_pending_lots_are_listed_with_their_available_at_oldest_first(member: Shop) -> None:
    member.buy("o-1", "10.00", guarantee="trial-90")
    member.at(5).buy("o-2", "20.00")
    member.at(7).buy("o-3", "30.00", guarantee="plus-10")
    points = member.points()
    assert points["pending"] == 60
    assert points["pending_lots"] == [
        {"points": 20, "available_at": day(35).isoformat()},
        {"points": 30, "available_at": day(67).isoformat()},
        {"points": 10, "available_at": day(90).isoformat()},
    ]


def test_a_lot_expires_730_days_after_it_became_available(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.at(20).buy("o-2", "40.00", guarantee="trial-90")  # available day 110
    member.at(30 + 730 - 0.001)
    assert member.points()["available"] == 140
    member.at(760)
    points = member.points()
    assert (points["available"], points["expired"]) == (40, 100)
    member.at(110 + 730)
    points = member.points()
    assert (points["available"], points["expired"]) == (0, 140)
    assert points["lifetime_earned"] == 140


def test_redemptions_spend_the_oldest_available_lots_first(member: Shop) -> None:
    member.buy("o-1", "100.00")  # available day 30, expires day 760
    member.at(10).buy("o-2", "100.00")  # available day 40, expires day 770
    member.at(20).buy("o-3", "100.00", guarantee="trial-90")  # available day 110, expires 840
    member.at(200).redeem("red-1", points=150)
    member.at(760)
    assert member.points()["expired"] == 0, "the oldest lot was spent in full"
    member.at(770)
    assert member.points()["expired"] == 50, "the second lot had 50 left"
    member.at(840)
    points = member.points()
    assert (points["expired"], points["available"]) == (150, 0)


def test_fifo_skips_lots_that_are_still_pending(member: Shop) -> None:
    member.buy("o-1", "100.00", guarantee="outcome-365")  # oldest, but pending to day 365
    member.at(1).buy("o-2", "100.00")  # available day 31
    member.at(40)
    assert member.points()["available"] == 100
    member.redeem("red-1", points=100)
    points = member.points()
    assert (points["available"], points["pending"]) == (0, 100)


def test_status_reads_do_not_depend_on_recorded_time_driven_events(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    member.at(31)
    assert member.events(kind="PointsBecameAvailable") == []
    assert member.points()["available"] == 100, "a read projects what is due"
    assert member.events(kind="PointsBecameAvailable") == [], "a read records nothing"


# The scheduler.


def test_the_scheduler_records_availability_reviews_and_expiry_in_time_order(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "600.00")  # silver now; lot available day 30, review day 365
    member.at(800)
    before = member.status()
    assert ledger.record_due() == 5
    recorded = [(e["type"], e["data"]["at"]) for e in member.events()[-5:]]
    assert recorded == [
        ("PointsBecameAvailable", day(30).isoformat()),
        ("BecameDormant", day(180).isoformat()),  # no purchase for the dormant days
        ("TierDowngraded", day(365).isoformat()),
        ("PointsExpiring", day(730).isoformat()),  # the notice, 30 days before
        ("PointsExpired", day(760).isoformat()),
    ]
    assert member.events(kind="TierDowngraded")[0]["data"]["reason"] == "review"
    assert member.status() == before, "recording what was due changes no outcome"
    assert ledger.record_due() == 0, "a second run records nothing"
    assert len(member.events()) == 8


def test_the_scheduler_only_records_what_is_due_by_now(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    member.at(10).buy("o-2", "100.00")
    member.at(35)
    assert ledger.record_due() == 1
    assert [e["data"]["lot"] for e in member.events(kind="PointsBecameAvailable")] == [
        "purchase:o-1"
    ]
    member.at(39.5)
    assert ledger.record_due() == 0
    member.at(40)
    assert ledger.record_due() == 1
    assert ledger.record_due() == 0
    assert member.points()["available"] == 200


def test_the_scheduler_catches_up_every_member(member: Shop, ledger: Ledger) -> None:
    member.enrol("m2")
    member.enrol("m3")
    member.buy("o-1", "10.00", member_id="m1")
    member.buy("o-2", "10.00", member_id="m2")
    member.at(31)
    assert ledger.record_due() == 2
    assert len(member.events("m1", "PointsBecameAvailable")) == 1
    assert len(member.events("m2", "PointsBecameAvailable")) == 1
    assert member.events("m3", "PointsBecameAvailable") == []


def test_the_scheduler_does_not_load_again_a_member_its_own_process_wrote(
    member: Shop, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index learns a member's next due time from a write made by its own process (the
    follow-up process, its own records) instead of loading the member again from the log."""
    ledger.record_due()  # the index follows the log from here on
    loaded: list[UUID] = []
    remember = ledger.due._remember

    def counted(uid: UUID, terms: Terms) -> None:
        loaded.append(uid)
        remember(uid, terms)

    monkeypatch.setattr(ledger.due, "_remember", counted)
    member.buy("o-1", "100.00")
    member.at(31)
    assert ledger.record_due() == 1  # the lot matures: its time came from the purchase's write
    assert loaded == [member_uuid("m1")]  # once, after recording the change, not before
    member.at(32)
    assert ledger.record_due() == 0
    assert loaded == [member_uuid("m1")]  # the change it recorded is not loaded again
    assert member.points()["available"] == 100


def test_a_change_records_every_due_event_before_it_takes_effect(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.at(100).buy("o-2", "5.00")
    types = [e["type"] for e in member.events()]
    assert types == ["Enrolled", "PurchaseRecorded", "PointsBecameAvailable", "PurchaseRecorded"]
    became = member.events(kind="PointsBecameAvailable")[0]
    assert became["data"]["at"] == day(30).isoformat(), "recorded at its own business time"
    assert became["recorded_at"] == day(100), "by the change that found it due"


def test_a_scheduler_run_at_a_given_time_is_the_same_as_one_at_the_clock(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    assert ledger.record_due(now=day(0) + timedelta(days=31)) == 1
    assert ledger.record_due(now=day(31)) == 0


def test_a_late_order_has_the_same_outcome_whether_or_not_the_scheduler_ran() -> None:
    outcomes = []
    for run_scheduler in (True, False):
        clock = FixedClock(day(0))
        shop = Shop(Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory()), clock)
        shop.enrol("m1")
        shop.buy("o-1", "100.00")  # available day 30
        shop.at(50)
        if run_scheduler:
            assert shop.ledger.record_due() == 1
        shop.buy("o-2", "10.00", occurred_at=day(20))
        shop.at(55)
        outcomes.append((answers(shop.ledger).purchase("o-2"), shop.status()))
    with_scheduler, without = outcomes
    assert with_scheduler == without
    purchase, status = without
    assert purchase["effective_at"] == day(30).isoformat(), "after the lot that became available"
    assert purchase["points_available_at"] == day(60).isoformat()
    assert status["points"]["pending"] == 10
