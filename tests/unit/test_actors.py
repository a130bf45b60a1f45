"""Who did it: every event records its actor beside its cause."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

from domain.actors import Actor, Cause
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import Member, member_uuid

KEY = Actor.key("key_123", "web shop", "storefront")


def actors(ledger: Ledger, member_id: str) -> list[tuple[str, dict[str, str] | None]]:
    return [(type(e).__name__, e.actor) for e in ledger.events.get(member_uuid(member_id))]


def test_a_request_records_its_key_and_the_scheduler_itself(
    ledger: Ledger, clock: FixedClock
) -> None:
    ledger.enrol("ann", "ann@example.com", None, Cause("req-1", KEY))
    ledger.record_purchase(
        "A-1", "ann", Decimal("10.00"), "USD", None, None, None, Cause("req-2", KEY)
    )
    clock.advance(timedelta(days=31))
    assert ledger.record_due() == 1
    ledger.redeem("ann", "R-1", None, 5, Cause("req-3", Actor.member("ann")))
    assert actors(ledger, "ann") == [
        ("Enrolled", KEY.to_dict()),
        ("PurchaseRecorded", KEY.to_dict()),
        ("PointsBecameAvailable", {"kind": "scheduler"}),
        ("PointsRedeemed", {"kind": "member", "member_id": "ann"}),
    ]
    assert KEY.to_dict() == {
        "kind": "key",
        "id": "key_123",
        "name": "web shop",
        "role": "storefront",
    }


def test_an_event_stored_before_actors_were_recorded_reads_no_actor(ledger: Ledger) -> None:
    ledger.enrol("ann", "ann@example.com", None, Cause("req-1", KEY))
    ledger.record_purchase(
        "A-1", "ann", Decimal("10.00"), "USD", None, None, None, Cause("req-2", KEY)
    )
    stored = ledger.mapper.to_stored_event(
        next(e for e in ledger.events.get(member_uuid("ann")) if type(e).__name__ != "Enrolled")
    )
    old_state = ledger.mapper.transcoder.decode(stored.state)
    del old_state["actor"]  # as every event recorded before this version
    old = dataclasses.replace(stored, state=ledger.mapper.transcoder.encode(old_state))
    event = ledger.mapper.to_domain_event(old)
    assert isinstance(event, Member.PurchaseRecorded)
    assert event.actor is None and event.cause == "req-2"
