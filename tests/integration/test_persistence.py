"""What the ledger records survives: a fresh Ledger on the same database (cold cache) sees it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from domain.clock import FixedClock
from domain.errors import Conflict
from domain.members import LineItem, member_uuid
from tests.answers import answers

from .ledgers import START, open_ledger, snapshot_versions, state


def test_a_purchase_refund_redemption_round_trip_reloads_in_a_fresh_ledger(
    database_url: str,
) -> None:
    clock = FixedClock(START)
    books = [LineItem("b-1", "books", 1, Decimal("100.00"))]
    with open_ledger(database_url, clock) as ledger:
        answers(ledger).enrol("m1", "m1@example.com", "Ann", "t")
        answers(ledger).enrol("m2", "m2@example.com", None, "t")
        answers(ledger).record_purchase(
            "o-1", "m1", Decimal("100.00"), "USD", None, books, None, "t"
        )
        clock.advance(timedelta(days=10))
        bought, _ = answers(ledger).record_purchase(
            "o-2", "m1", Decimal("600.00"), "USD", None, [], "satisfaction", "t"
        )
        assert (bought["points_awarded"], bought["tier"]) == (600, "silver")
        clock.advance(timedelta(days=40))  # day 50: both lots available, 750 points
        assert (
            answers(ledger).redeem("m1", "red-1", "coffee", None, "t")[0]["points_available"] == 250
        )
        assert answers(ledger).redeem("m1", "red-2", None, 100, "t")[0]["points_available"] == 150
        assert answers(ledger).cancel_redemption("red-2", "t")[0]["points_available"] == 250
        refunded, _ = answers(ledger).refund("o-2", "r-1", Decimal("300.00"), "too big", "t")
        # ceil(600 x 300 / 600) = 300: 150 from its own lot, 100 from the returned lot, 50 owed.
        assert refunded["points_clawed_back"] == 300
        assert (refunded["tier"], refunded["tier_changed"]) == ("bronze", True)
        day_50 = clock.now()
        clock.advance(timedelta(days=1))
        assert ledger.record_due() == 0
        status = answers(ledger).member_status("m1")
        purchases = [answers(ledger).purchase("o-1"), answers(ledger).purchase("o-2")]
        events = ledger.member_events("m1")
    assert status["points"] == {
        "available": -50,
        "pending": 0,
        "lifetime_earned": 750,
        "clawed_back": 300,
        "redeemed": 500,
        "expired": 0,
        "pending_lots": [],
    }
    assert status["tier"]["qualifying_spend"] == "400.00"
    assert [e["type"] for e in events] == [
        "Enrolled",
        "PurchaseRecorded",
        "PurchaseRecorded",
        "TierUpgraded",
        "PointsBecameAvailable",
        "GuaranteeExpiring",  # day 33: o-2's window closes on day 40
        "PointsBecameAvailable",
        "PointsRedeemed",
        "PointsRedeemed",
        "RedemptionCancelled",
        "PurchaseRefunded",
        "TierDowngraded",
    ]

    with open_ledger(database_url, clock) as fresh:
        assert answers(fresh).member_status("m1") == status
        assert [answers(fresh).purchase("o-1"), answers(fresh).purchase("o-2")] == purchases
        assert fresh.member_events("m1") == events
        assert answers(fresh).member_status("m1", as_of=day_50) == {
            **status,
            "as_of": day_50.isoformat(),
        }
        # Idempotency and ownership survive the restart too.
        again, created = answers(fresh).record_purchase(
            "o-2", "m1", Decimal("600.00"), "USD", None, [], "satisfaction", "t"
        )
        assert (created, again) == (False, bought)
        assert answers(fresh).refund("o-2", "r-1", Decimal("300.00"), "too big", "t")[1] is False
        assert answers(fresh).redeem("m1", "red-1", "coffee", None, "t")[1] is False
        assert answers(fresh).cancel_redemption("red-2", "t")[1] is False
        with pytest.raises(Conflict):
            answers(fresh).record_purchase(
                "o-1", "m2", Decimal("100.00"), "USD", None, books, None, "t"
            )
        with pytest.raises(Conflict):
            answers(fresh).redeem("m2", "red-1", "coffee", None, "t")
        assert fresh.member_events("m1") == events


def test_a_long_history_is_snapshotted_and_reloads_identically(database_url: str) -> None:
    clock = FixedClock(START)
    uid = member_uuid("m1")
    categories = ["books", "toys", "garden", "food"]
    with open_ledger(database_url, clock) as ledger:
        answers(ledger).enrol("m1", "m1@example.com", None, "t")
        for n in range(140):
            clock.advance(timedelta(days=1))
            items = [LineItem(f"s-{n}", categories[n % 4], 1, Decimal("3.00"))]
            answers(ledger).record_purchase(
                f"o-{n}", "m1", Decimal("3.00"), "USD", None, items, None, "t"
            )  # earlier lots become available in between: two events a day
            if n % 40 == 39:
                answers(ledger).redeem("m1", f"red-{n}", None, 20, "t")
                answers(ledger).refund(f"o-{n - 1}", f"r-{n}", Decimal("1.00"), None, "t")
        live = answers(ledger).member_status("m1")
        version = ledger.repository.get(uid).version
    assert version > 250
    taken = snapshot_versions(database_url, uid)
    # One snapshot in the save that crosses each hundred (a save may record several events).
    assert [v // 100 for v in taken] == list(range(1, version // 100 + 1)), taken
    assert all(v % 100 < 5 for v in taken), taken
    # 140 x 3 points + 4 cross-sell bonuses (bronze throughout); 3 refunds of 1.00 take 1 each.
    assert live["points"]["lifetime_earned"] == 140 * 3 + 4 * 50
    assert live["points"]["clawed_back"] == 3 * 1
    assert live["points"]["redeemed"] == 3 * 20

    with (
        open_ledger(database_url, clock) as fresh,
        open_ledger(database_url, clock, snapshots=False, cache=False) as replay,
    ):
        assert fresh.snapshots is not None and replay.snapshots is None
        reloaded = fresh.repository.get(uid)
        from_events = replay.repository.get(uid)
        assert reloaded.version == from_events.version == version
        assert state(reloaded) == state(from_events)
        assert answers(fresh).member_status("m1") == live
        # The snapshot itself holds exactly the member at its version.
        latest = next(iter(fresh.snapshots.get(uid, desc=True, limit=1)))
        assert state(latest.mutate(None)) == state(
            replay.repository.get(uid, version=latest.originator_version)
        )
