"""An import and a live storefront writing the same members at once lose and double nothing.

Two Ledger instances on one PostgreSQL database stand for the import's process and a server
process: only the event store's version check and the ownership of order ids stand between
them. The storefront posts new orders of the imported members, the same orders the import
brings (same data: recorded once), and orders the import gives to other members (one member
gets each).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from api import imports
from domain.clock import FixedClock
from domain.errors import Conflict
from domain.imports import APPLIED, PRESENT, REJECTED
from domain.ledger import Ledger
from domain.members import member_uuid

from .ledgers import START, open_ledger

MEMBERS = 40
ORDERS = 6  # per member, in the import


def history() -> list[str]:
    records: list[dict[str, Any]] = []
    for m in range(MEMBERS):
        enrolled = START - timedelta(days=700 - m)
        records.append(
            {"kind": "member", "member_id": f"m{m}", "email": f"m{m}@example.com",
             "enrolled_at": enrolled.isoformat()}
        )  # fmt: skip
        for o in range(ORDERS):
            records.append(
                {"kind": "purchase", "order_id": f"i-{m}-{o}", "member_id": f"m{m}",
                 "amount": f"{100 + 37 * o}.00", "currency": "USD",
                 "occurred_at": (enrolled + timedelta(days=20 * o + 1)).isoformat()}
            )  # fmt: skip
    return [json.dumps(record) for record in records]


def events_by_type(ledger: Ledger, member_id: str) -> list[dict[str, Any]]:
    return ledger.member_events(member_id, limit=1000)


@pytest.mark.postgres
def test_an_import_beside_live_purchases_records_every_order_once(postgres_url: str) -> None:
    clock = FixedClock(START)
    lines = history()
    with open_ledger(postgres_url, clock) as importer, open_ledger(postgres_url, clock) as live:
        # The members first (a storefront can only post for enrolled members), then the rest
        # of the history while the storefront writes.
        members = [line for line in lines if '"kind": "member"' in line]
        report, _ = imports.run(importer, members, "members", batch_size=10)
        assert report.total(APPLIED) == MEMBERS

        acknowledged: list[str] = []
        refused: list[str] = []
        import_started, storefront_going = threading.Event(), threading.Event()

        def storefront() -> None:
            import_started.wait(timeout=60)
            for m in range(MEMBERS):
                if m == MEMBERS // 4:
                    storefront_going.set()
                # A new order of this member; an order of the import with the same data; an
                # order of the import for another member.
                same = json.loads(lines[1 + m * (ORDERS + 1)])
                for order_id, member_id, amount, occurred_at in (
                    (f"live-{m}", f"m{m}", "20.00", None),
                    (same["order_id"], same["member_id"], same["amount"], same["occurred_at"]),
                    (f"i-{(m + 1) % MEMBERS}-3", f"m{m}", "5.00", None),
                ):
                    when = None if occurred_at is None else clock.now().fromisoformat(occurred_at)
                    try:
                        live.record_purchase(
                            order_id, member_id, Decimal(amount), "USD", when, [], None, "live"
                        )
                        acknowledged.append(order_id)
                    except Conflict:
                        refused.append(order_id)

        def interleave(done: int, total: int) -> None:
            # Once the import's first batch is saved, it goes on only when the storefront has
            # written a quarter of its orders: the two write the same members at once.
            if done and not import_started.is_set():
                import_started.set()
                storefront_going.wait(timeout=60)

        thread = threading.Thread(target=storefront)
        thread.start()
        report, results = imports.run(importer, lines, "history", batch_size=7, progress=interleave)
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert import_started.is_set() and storefront_going.is_set()

        by_order = {r.id: r for r in results if r.kind == "purchase"}
        recorded: Counter[str] = Counter()
        owners: dict[str, str] = {}
        for m in range(MEMBERS):
            for event in events_by_type(importer, f"m{m}"):
                if event["type"] == "PurchaseRecorded":
                    recorded[event["data"]["order_id"]] += 1
                    owners[event["data"]["order_id"]] = f"m{m}"
        assert set(recorded.values()) == {1}, "an order recorded twice"
        for order_id in acknowledged:  # nothing the storefront was told is lost
            assert order_id in recorded
        for order_id, result in by_order.items():
            if result.status in (APPLIED, PRESENT):
                assert owners[order_id] == json.loads(lines[result.line - 1])["member_id"]
            else:  # rejected only because the storefront gave it to another member first
                assert result.status == REJECTED
                assert result.problem is not None and result.problem["status"] == 409
                assert owners[order_id] != json.loads(lines[result.line - 1])["member_id"]
        # Every order of the import is someone's, and the contested ones one member's only.
        assert {f"i-{m}-{o}" for m in range(MEMBERS) for o in range(ORDERS)} <= set(recorded)
        assert len(refused) + sum(r.status == REJECTED for r in by_order.values()) == MEMBERS
        # The ledger folds to what both wrote: each member's points are its purchases' points.
        for m in range(MEMBERS):
            member = importer.member_copy(f"m{m}")
            assert member.id == member_uuid(f"m{m}")
            assert member.lifetime_earned == sum(
                p.points + p.bonus for p in member.purchases.values()
            )
