"""The refusals of an import are kept in the store: the same input run again, by another
process, refuses them again; a changed input tries them afresh."""

from __future__ import annotations

import json

from adapters.import_rejections import TableRejections
from adapters.settings import Database
from api import imports
from domain.clock import FixedClock

from .ledgers import START, open_ledger

RECORDS = [
    {"kind": "member", "member_id": "c-1", "email": "c1@example.com",
     "enrolled_at": "2023-01-01T10:00:00+00:00"},
    {"kind": "purchase", "order_id": "o-1", "member_id": "c-1", "amount": "100.00",
     "currency": "USD", "occurred_at": "2023-01-02T10:00:00+00:00"},
    # 50 points asked while o-1's 100 are still pending (until 2023-02-01): refused.
    {"kind": "redemption", "member_id": "c-1", "redemption_id": "x-1", "points": 50,
     "occurred_at": "2023-01-10T10:00:00+00:00"},
    {"kind": "purchase", "order_id": "o-2", "member_id": "c-1", "amount": "10.00",
     "currency": "USD", "occurred_at": "2023-06-01T10:00:00+00:00"},
]  # fmt: skip


def test_a_refused_record_stays_refused_for_the_same_input(database_url: str) -> None:
    lines = [json.dumps(record) for record in RECORDS]
    clock = FixedClock(START)
    database = Database.from_url(database_url)
    for run in range(2):  # each run as another process: its own ledger and table
        with open_ledger(database_url, clock) as ledger:
            rejections = TableRejections(database)
            try:
                _, results = imports.run(ledger, lines, "h", rejections=rejections)
                head = ledger.recorder.max_notification_id()
            finally:
                rejections.close()
        assert results[2].status == "rejected", run
        assert results[2].problem is not None
        assert results[2].problem["type"].endswith("/insufficient-points")
        assert [r.status for r in results[:2]] == (["applied"] * 2 if run == 0 else ["present"] * 2)
    # The file changed (the redemption moved after the points matured): tried afresh.
    moved = {**RECORDS[2], "occurred_at": "2023-03-01T10:00:00+00:00"}
    changed = [json.dumps(record) for record in (*RECORDS[:2], moved, RECORDS[3])]
    with open_ledger(database_url, clock) as ledger:
        rejections = TableRejections(database)
        try:
            _, results = imports.run(ledger, changed, "h", rejections=rejections)
        finally:
            rejections.close()
        assert results[2].status == "applied"
        assert ledger.recorder.max_notification_id() > head
