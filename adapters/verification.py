"""Prove the live member-status view is what the history says: replay it into a scratch view
and compare the two, member by member and field by field."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from adapters.projections import (
    REPLAY_PAGE,
    REPLAY_ROWS_EVERY,
    MemberStatusProjection,
    ProgressReport,
    ProjectionWorker,
    Shapes,
)
from adapters.settings import Database
from adapters.views import MemberStatusRow, MemberStatusView, PurchaseRow, open_member_status_view
from domain.ledger import Ledger

MISSING_LIVE = "missing in live view"
MISSING_REPLAYED = "missing in replay"


class VerificationStopped(Exception):
    """Told to stop before the replay was whole: a partial replay proves nothing."""


@dataclass(frozen=True)
class Mismatch:
    member_id: str
    field: str
    live: Any
    replayed: Any


@dataclass(frozen=True)
class Verification:
    events: int
    members: int
    position: int | None  # the live view's tracking position; None: it was never built
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def live_view_built(self) -> bool:
        return self.position is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "members": self.members,
            "position": self.position,
            "live_view": "built" if self.live_view_built else "never built: run daifuku project",
            "mismatches": [asdict(mismatch) for mismatch in self.mismatches],
        }


def verify_member_status(
    ledger: Ledger,
    live: MemberStatusView,
    shapes: Shapes,
    progress: ProgressReport | None = None,
    stop: threading.Event | None = None,
) -> Verification:
    """Replay the log up to the live view's position into a fresh SQLite file and compare;
    ``progress`` hears of the replay a page at a time, ``stop`` ends it between pages."""
    position, live_rows, live_purchases = live.rows_with_position(ledger.name)
    with tempfile.TemporaryDirectory(prefix="daifuku-verify-") as scratch_dir:
        scratch_db = Database(kind="sqlite", path=str(Path(scratch_dir) / "replay.db"))
        scratch = open_member_status_view(scratch_db.event_store_env())
        try:
            projection = MemberStatusProjection(scratch, ledger, shapes)
            worker = ProjectionWorker(ledger, projection, REPLAY_PAGE, REPLAY_ROWS_EVERY)
            # A view never built is compared with the whole history.
            events = worker.catch_up(until=position, progress=progress, stop=stop)
            if stop is not None and stop.is_set():
                raise VerificationStopped(f"stopped after {events} events")
            replayed_rows = list(scratch.all())
            replayed_purchases = list(scratch.all_purchases())
        finally:
            scratch.close()
    live_by_id = {row.member_id: row for row in live_rows}
    replayed_by_id = {row.member_id: row for row in replayed_rows}
    mismatches: list[Mismatch] = []
    for member_id in sorted(live_by_id.keys() | replayed_by_id.keys()):
        mismatches.extend(
            compare(member_id, live_by_id.get(member_id), replayed_by_id.get(member_id))
        )
    mismatches.extend(compare_purchases(live_purchases, replayed_purchases))
    return Verification(
        events=events, members=len(replayed_by_id), position=position, mismatches=mismatches
    )


def compare(
    member_id: str, live: MemberStatusRow | None, replayed: MemberStatusRow | None
) -> list[Mismatch]:
    if live is None:
        return [Mismatch(member_id, "row", MISSING_LIVE, "present")]
    if replayed is None:
        return [Mismatch(member_id, "row", "present", MISSING_REPLAYED)]
    left, right = _fields(live), _fields(replayed)
    return [
        Mismatch(member_id, name, left.get(name), right.get(name))
        for name in sorted(left.keys() | right.keys())
        if left.get(name) != right.get(name)
    ]


def compare_purchases(live: list[PurchaseRow], replayed: list[PurchaseRow]) -> list[Mismatch]:
    """Every purchase row, field by field (as ``purchases.<order id>.<field>``)."""
    live_by_id = {row.order_id: row for row in live}
    replayed_by_id = {row.order_id: row for row in replayed}
    mismatches: list[Mismatch] = []
    for order_id in sorted(live_by_id.keys() | replayed_by_id.keys()):
        left, right = live_by_id.get(order_id), replayed_by_id.get(order_id)
        name = f"purchases.{order_id}"
        if left is None or right is None:
            owner = (right or left).member_id  # type: ignore[union-attr]
            found = (MISSING_LIVE, "present") if left is None else ("present", MISSING_REPLAYED)
            mismatches.append(Mismatch(owner, name, *found))
            continue
        flat_left = {"member_id": left.member_id, **_flatten(left.purchase)}
        flat_right = {"member_id": right.member_id, **_flatten(right.purchase)}
        mismatches.extend(
            Mismatch(right.member_id, f"{name}.{key}", flat_left.get(key), flat_right.get(key))
            for key in sorted(flat_left.keys() | flat_right.keys())
            if flat_left.get(key) != flat_right.get(key)
        )
    return mismatches


def _fields(row: MemberStatusRow) -> dict[str, Any]:
    """A member row as dotted fields: its bookkeeping, its status and its referrals."""
    return {
        "version": row.version,
        "applied": row.applied,
        "updated_at": row.updated_at.astimezone(UTC).isoformat(),
        "program_version": row.program_version,
        "valid_until": None
        if row.valid_until is None
        else row.valid_until.astimezone(UTC).isoformat(),
        **_flatten(row.status),
        "referrals": row.referrals,
        **_flatten(row.value, "value."),
    }


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted fields (``tier.name``); lists are compared whole."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat
