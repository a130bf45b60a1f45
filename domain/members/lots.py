"""Point lots: each award is a lot that matures, is spent oldest first, expires, or is clawed back.

A lot is named by what it came from (``purchase:<order>``, ``referral:<referee>``,
``referred-by:<referrer>``, ``redemption:<id>#<lot>``), so events name lots, not positions.
Events stored before lots had names refer to ``#<n>``: the n-th lot the member opened.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any

from domain.members.events import MemberEvent

if TYPE_CHECKING:
    from domain.members.member import Member


class LotStatus(Enum):
    PENDING = "pending"
    AVAILABLE = "available"
    EXPIRED = "expired"
    VOID = "void"


class DueKind(IntEnum):
    """What falls due at an instant, in the order changes due at the same instant are recorded:
    the notices last, so they tell of the state the changes left."""

    LOT_MATURES = 0
    LOT_EXPIRES = 1
    TIER_REVIEW = 2
    REFERRAL_REWARD = 3
    POINTS_EXPIRING = 4
    GUARANTEE_EXPIRING = 5
    BECAME_DORMANT = 6
    FOLLOWUP_STEP = 7


@dataclass(slots=True)
class Lot:
    id: str
    seq: int  # the n-th lot the member opened: orders lots due at the same instant
    points: int
    remaining: int
    status: LotStatus
    available_at: datetime
    expires_at: datetime
    expiry_noticed: bool = False  # the member was told it expires soon: never told twice

    def due(self) -> tuple[datetime, DueKind] | None:
        """When this lot next changes by itself: it matures, or it expires."""
        if self.remaining <= 0:
            return None
        if self.status is LotStatus.PENDING:
            return self.available_at, DueKind.LOT_MATURES
        if self.status is LotStatus.AVAILABLE:
            return self.expires_at, DueKind.LOT_EXPIRES
        return None

    def awaits_expiry_notice(self) -> bool:
        """Its points are available and the member was not yet told they expire soon."""
        return self.status is LotStatus.AVAILABLE and self.remaining > 0 and not self.expiry_noticed


@dataclass(frozen=True)
class PendingPoints:
    points: int
    available_at: datetime


class PointLots:
    """A member's lots, the balance by status, the debt, and a heap of the lots' due times.

    Points clawed back beyond what the lots hold are a debt, repaid by the next lot to become
    available.
    """

    def __init__(self) -> None:
        self.lots: dict[str, Lot] = {}
        self.opened: list[str] = []  # ids in the order opened: resolves the legacy ``#<n>``
        self.open: list[str] = []
        self.pending = 0
        self.available = 0
        self.debt = 0
        # [due time, kind, seq, lot id]; lists, since snapshots store them as JSON arrays.
        self.due: list[list[Any]] = []
        # [expires_at, seq, lot id] of the available lots not yet noticed: the notice days are a
        # program rule, so lots are queued by their expiry and the notice time found from it.
        self.notices: list[list[Any]] = []

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def resolve(self, ref: str) -> str:
        """The id of the lot an event names (an id, or ``#<n>`` in events stored before ids)."""
        return self.opened[int(ref[1:])] if ref.startswith("#") else ref

    def __getitem__(self, ref: str) -> Lot:
        return self.lots[self.resolve(ref)]

    def add(
        self,
        lot_id: str,
        points: int,
        status: LotStatus,
        available_at: datetime,
        expires_at: datetime,
    ) -> Lot:
        assert lot_id not in self.lots, f"lot {lot_id!r} opened twice"
        lot = Lot(lot_id, len(self.opened), points, points, status, available_at, expires_at)
        self.lots[lot_id] = lot
        self.opened.append(lot_id)
        self.open.append(lot_id)
        self._count(lot, points)
        self._queue(lot)
        return lot

    def mature(self, ref: str) -> Lot:
        lot = self[ref]
        self.pending -= lot.remaining
        self.available += lot.remaining
        lot.status = LotStatus.AVAILABLE
        self._queue(lot)
        self.settle_debt(lot)
        return lot

    def expire(self, ref: str, points: int) -> None:
        lot = self[ref]
        lot.remaining -= points
        self.available -= points
        lot.status = LotStatus.EXPIRED
        self._close_if_empty(lot)

    def take(self, taken: dict[str, int]) -> None:
        """Points leave these lots (redeemed or clawed back)."""
        for ref, points in taken.items():
            lot = self[ref]
            lot.remaining -= points
            self._count(lot, -points)
            self._close_if_empty(lot)

    def settle_debt(self, lot: Lot) -> None:
        settled = min(self.debt, lot.remaining)
        if settled:
            lot.remaining -= settled
            self._count(lot, -settled)
            self.debt -= settled
            self._close_if_empty(lot)

    def plan_clawback(self, own: str | None, points: int) -> tuple[dict[str, int], int]:
        """From the lot the points came with first, then the oldest other lots, then into debt."""
        order = ([own] if own in self.open else []) + [i for i in self.open if i != own]
        taken: dict[str, int] = {}
        wanted = points
        for lot_id in order:
            if wanted == 0:
                break
            take = min(self.lots[lot_id].remaining, wanted)
            if take:
                taken[lot_id] = take
                wanted -= take
        return taken, wanted

    def plan_redemption(self, points: int) -> dict[str, int]:
        """Available lots, the first to have become available spent first."""
        spendable = sorted(
            (lot for i in self.open if (lot := self.lots[i]).status is LotStatus.AVAILABLE),
            key=lambda lot: (lot.available_at, lot.seq),
        )
        taken: dict[str, int] = {}
        wanted = points
        for lot in spendable:
            if wanted == 0:
                break
            take = min(lot.remaining, wanted)
            taken[lot.id] = take
            wanted -= take
        return taken

    def spendable_points(self) -> int:
        return self.available - self.debt

    def pending_lots(self) -> list[PendingPoints]:
        return [
            PendingPoints(lot.remaining, lot.available_at)
            for i in self.open
            if (lot := self.lots[i]).status is LotStatus.PENDING
        ]

    def next_due(self) -> tuple[datetime, DueKind, int, str] | None:
        """The earliest lot change due (the heap is pruned after every change)."""
        if not self.due:
            return None
        when, kind, seq, lot_id = self.due[0]
        assert isinstance(when, datetime) and isinstance(kind, int)
        assert isinstance(seq, int) and isinstance(lot_id, str)
        return when, DueKind(kind), seq, lot_id

    def next_expiry_notice(self, days: int) -> tuple[datetime, DueKind, int, str] | None:
        """The earliest notice of a lot expiring within ``days`` (none if ``days`` is 0): that
        many days before its expiry, or at once if its points became available later than that.
        An available lot became so by the member's business time, so the lot expiring first is
        the first due."""
        if days <= 0 or not self.notices:
            return None
        expires_at, seq, lot_id = self.notices[0]
        assert isinstance(expires_at, datetime) and isinstance(lot_id, str)
        when = max(expires_at - timedelta(days=days), self.lots[lot_id].available_at)
        return when, DueKind.POINTS_EXPIRING, seq, lot_id

    def prune(self) -> None:
        """Drop queued due times of lots that were emptied or moved on since they were queued,
        and queued notices of lots no longer awaiting one."""
        heap = self.due
        while heap:
            when, kind, _, lot_id = heap[0]
            assert isinstance(lot_id, str)
            if self.lots[lot_id].due() == (when, kind):
                break
            heapq.heappop(heap)
        notices = self.notices
        while notices and not self.lots[notices[0][2]].awaits_expiry_notice():
            heapq.heappop(notices)

    def _queue(self, lot: Lot) -> None:
        due = lot.due()
        if due is not None:
            heapq.heappush(self.due, [due[0], due[1].value, lot.seq, lot.id])
        if lot.awaits_expiry_notice():
            heapq.heappush(self.notices, [lot.expires_at, lot.seq, lot.id])

    def _count(self, lot: Lot, points: int) -> None:
        if lot.status is LotStatus.PENDING:
            self.pending += points
        else:
            self.available += points

    def _close_if_empty(self, lot: Lot) -> None:
        if lot.remaining == 0 and lot.id in self.open:
            self.open.remove(lot.id)
            if lot.status is LotStatus.PENDING:
                lot.status = LotStatus.VOID


# Events: each change runs again on every replay.


class PointsBecameAvailable(MemberEvent):
    TOPIC = "domain.members:Member.PointsBecameAvailable"
    class_version = 2
    lot: str
    points: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["lot"] = f"#{state['lot']}"

    def change(self, member: Member) -> None:
        member.lots.mature(self.lot)


class PointsExpired(MemberEvent):
    TOPIC = "domain.members:Member.PointsExpired"
    class_version = 2
    lot: str
    points: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["lot"] = f"#{state['lot']}"

    def change(self, member: Member) -> None:
        member.lots.expire(self.lot, self.points)
        member.expired += self.points


class PointsExpiring(MemberEvent):
    """A notice, not a change of points: the lot's remaining points expire soon."""

    TOPIC = "domain.members:Member.PointsExpiring"
    lot: str
    points: int  # what the lot still held when the member was told
    expires_at: datetime

    def change(self, member: Member) -> None:
        member.lots[self.lot].expiry_noticed = True
