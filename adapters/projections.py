"""The projection that keeps the member-status view, and the worker that feeds it the log.

The worker reads the ledger's notification log a page at a time from the view's own tracking
position (SQLite has no subscriptions, so it polls on both databases). Every event's position
is recorded: a member event's with its row, any other event's on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from adapters.background import BackgroundLoop
from adapters.views import (
    VIEW_NAME,
    MemberStatusRow,
    MemberStatusView,
    PurchaseRow,
    Refresh,
    frequency_key,
    last_day_key,
    last_hour_key,
    net_keys,
    plain,
)
from domain import analytics, value
from domain.ledger import Ledger
from domain.members import MadeReferral, Member, MemberStatus, Purchase, Terms, member_uuid
from domain.members.events import MemberEvent
from domain.program import PROGRAM_ID, Program

log = logging.getLogger(__name__)
PAGE = 500
REPLAY_PAGE = 20_000  # events read and decoded at a time by a rebuild
# A rebuild writes the rows its events changed once per this many events (with the position
# of the last one), not once a page: a member with events in every page is turned into a row a
# few times rather than once a page. Each write is still whole (rows and position together), so
# a rebuild that stops leaves a view that is right as of its last write, and resumable.
REPLAY_ROWS_EVERY = 100_000
PROGRAM_TOPICS = [get_topic(Program.Started), get_topic(Program.Published)]
PROJECTED = (f"{get_topic(Member)}.", f"{get_topic(Program)}.")  # the topics a view reads
REFRESH_PAGE = 500  # rows refreshed per transaction
REFRESH_MOST = 5_000  # rows refreshed before the worker reads the log again


class Shapes(Protocol):
    """How the rows keep a member's answers: the API's JSON, given by whoever builds the view
    (``api.representations``), so a row reads exactly as the ledger's answer would."""

    def status(self, found: MemberStatus) -> dict[str, Any]: ...

    def purchase(self, bought: Purchase) -> dict[str, Any]: ...

    def referrals(
        self, referrer_id: str, made: list[MadeReferral], after: int = 0
    ) -> list[dict[str, Any]]: ...


# (events done, events to do, seconds since the start)
ProgressReport = Callable[[int, int, float], None]


@dataclass
class Touched:
    """A member some events of a batch changed: its last event, and the terms of that moment."""

    uid: UUID
    moment: datetime
    version: int
    terms: Terms
    applied: int = 0
    orders: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class PreparedBatch:
    members: list[MemberStatusRow]
    purchases: list[PurchaseRow]
    tracking: Tracking


class MemberStatusProjection(Projection[MemberStatusView]):
    """Each member's status, referrals and purchases as of its latest event, under the program
    known at that position.

    Events come a batch at a time: each member's copy is moved on event by event, then the rows
    the batch changed are written once, with the batch's last position, in one transaction.
    """

    name = VIEW_NAME
    cache_size = 20_000

    def __init__(self, view: MemberStatusView, ledger: Ledger, shapes: Shapes) -> None:
        super().__init__(view)
        self.ledger = ledger
        self.shapes = shapes
        self._members: OrderedDict[UUID, Member] = OrderedDict()
        self._program: Program | None = None
        self._terms: dict[int, Terms] = {}
        # Called before the view is read: a worker writing in the background waits for it.
        self.flush: Callable[[], None] = lambda: None

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.process_batch([(domain_event, tracking)])

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        """Apply the events of ``batch`` (in log order) and record its last position."""
        self.write_prepared(self.prepare_batch(batch))

    def prepare_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> PreparedBatch | None:
        """Fold ``batch`` into the copies in memory and make the rows it changed."""
        if not batch:
            return None
        touched: dict[UUID, Touched] = {}
        self.fold(batch, touched)
        return self.prepare_rows(touched, batch[-1][1])

    def fold(self, batch: Sequence[tuple[Any, Tracking]], touched: dict[UUID, Touched]) -> None:
        """Move the copies in memory on by ``batch``, noting in ``touched`` whom it changed."""
        try:
            for event, tracking in batch:
                self._fold(event, tracking, touched)
        except BaseException:
            self.reset()
            raise

    def prepare_rows(self, touched: dict[UUID, Touched], tracking: Tracking) -> PreparedBatch:
        """The rows of the members in ``touched``, to be written with position ``tracking``."""
        try:
            members, purchases = self._rows(touched)
        except BaseException:
            self.reset()
            raise
        return PreparedBatch(members, purchases, tracking)

    def write_prepared(self, prepared: PreparedBatch | None) -> None:
        """Write a prepared batch's rows and position in one transaction."""
        if prepared is None:
            return
        try:
            self.view.write_batch(prepared.members, prepared.purchases, prepared.tracking)
        except BaseException:
            self.reset()
            raise

    def reset(self) -> None:
        """The copies in memory may be ahead of what was written: start again from the store."""
        self._members.clear()
        self._program = None

    def _fold(self, event: Any, tracking: Tracking, touched: dict[UUID, Touched]) -> None:
        if isinstance(event, Program.Started | Program.Published):
            self._program = self._fold_program(event)
            if isinstance(event, Program.Published):
                self._restate(event.timestamp, tracking, touched)
        # ``MemberEvent`` is the base of every later member event; ``Member.Changed`` is not:
        # the aggregate redefines only the events named in its body (a step event derives
        # from a base of the follow-ups module, so it is no ``Member.Changed``).
        elif isinstance(event, Member.Enrolled | MemberEvent):
            member = self._fold_member(event)
            moment: datetime = event.timestamp
            terms = self._terms_at(moment, tracking)
            entry = touched.get(member.id)
            if entry is None:
                entry = touched[member.id] = Touched(member.id, moment, member.version, terms)
            entry.moment, entry.version, entry.terms = moment, member.version, terms
            entry.applied += 1
            order_id = getattr(event, "order_id", None)
            if isinstance(event, Member.TierDowngraded) and member.last_refund is not None:
                order_id = member.last_refund[0]  # the refund it belongs to records its tier
            if isinstance(order_id, str) and order_id in member.purchases:
                entry.orders.add(order_id)

    def _restate(self, moment: datetime, tracking: Tracking, touched: dict[UUID, Touched]) -> None:
        """A new program version changes every member's status (thresholds, names, windows):
        every row is written again as of the publication, under the new version."""
        terms = self._terms_at(moment, tracking)
        self.flush()  # the rows of earlier batches must be in the view before it is read
        for entry in touched.values():
            if entry.moment <= moment:
                entry.moment, entry.terms = moment, terms
        for row in self.view.all():
            uid = member_uuid(row.member_id)
            if uid not in touched:
                touched[uid] = Touched(uid, moment, row.version, terms)

    def _rows(
        self, touched: dict[UUID, Touched]
    ) -> tuple[list[MemberStatusRow], list[PurchaseRow]]:
        members: list[MemberStatusRow] = []
        purchases: list[PurchaseRow] = []
        for entry in touched.values():
            member = self._members.get(entry.uid)
            if member is None or member.version != entry.version:
                member = self.ledger.repository.get(entry.uid, version=entry.version)
            members.append(member_row(member, entry, self.shapes))
            purchases.extend(
                PurchaseRow(
                    order_id, member.member_id, self.shapes.purchase(member.purchases[order_id])
                )
                for order_id in sorted(entry.orders)
            )
        return members, purchases

    def member_at(self, uid: UUID, version: int) -> Member:
        """The member at ``version``: the copy in memory if it is that one, else loaded."""
        cached = self._members.get(uid)
        if cached is not None and cached.version == version:
            return cached
        member: Member = self.ledger.repository.get(uid, version=version)
        return member

    def terms_of(self, version: int) -> Terms:
        terms = self._terms.get(version)
        if terms is None:
            program: Program = self.ledger.repository.get(PROGRAM_ID)
            terms = self._terms[version] = Terms(version, program.at_version(version).rules)
        return terms

    def _fold_member(self, event: Any) -> Member:
        """The member right after ``event``: the cached copy moved on, or loaded at that version."""
        uid: UUID = event.originator_id
        cached = self._members.pop(uid, None)
        member: Member
        if isinstance(event, Member.Enrolled):
            member = cast(Member, event.mutate(None))
        elif cached is not None and cached.version == event.originator_version - 1:
            member = cast(Member, event.mutate(cached))
        else:
            member = self.ledger.repository.get(uid, version=event.originator_version)
        self._members[uid] = member
        if len(self._members) > self.cache_size:
            self._members.popitem(last=False)
        return member

    def _fold_program(self, event: Any) -> Program:
        program = self._program
        if isinstance(event, Program.Started):
            return cast(Program, event.mutate(None))
        if program is not None and program.version == event.originator_version - 1:
            return cast(Program, event.mutate(program))
        loaded: Program = self.ledger.repository.get(PROGRAM_ID, version=event.originator_version)
        return loaded

    def _terms_at(self, moment: datetime, tracking: Tracking) -> Terms:
        """The version in force at ``moment`` among those recorded before this position, so a
        live run and a replay see the same program."""
        program = self._program
        if program is None:
            program = self._program = self._program_before(tracking.notification_id)
        versions = program.versions
        latest = versions[-1]
        if latest["published_at"] <= moment:  # nearly always: the newest version applies
            version = latest["version"]
        else:
            version = 1
            for entry in versions:
                if entry["published_at"] <= moment:
                    version = entry["version"]
        terms = self._terms.get(version)
        if terms is None:
            terms = Terms(version, program.at_version(version).rules)
            self._terms[version] = terms
        return terms

    def _program_before(self, position: int) -> Program:
        program: Program | None = None
        recorder = self.ledger.recorder
        for notification in recorder.select_notifications(
            start=1, limit=10_000, stop=position, topics=PROGRAM_TOPICS
        ):
            event: Any = self.ledger.mapper.to_domain_event(notification)
            program = event.mutate(program)
        if program is None:
            raise LookupError(f"no program was recorded before position {position}")
        return program


class ProjectionWorker:
    """Feeds a projection every event after its view's tracking position, in log order."""

    def __init__(
        self,
        ledger: Ledger,
        projection: MemberStatusProjection,
        page_size: int = PAGE,
        rows_every: int = 0,
    ) -> None:
        self.ledger = ledger
        self.projection = projection
        self.page_size = page_size
        # Rows are written once per ``rows_every`` events (at least once a page).
        self.rows_every = max(rows_every, page_size)

    @property
    def position(self) -> int:
        return self.projection.view.max_tracking_id(self.ledger.name) or 0

    def catch_up(
        self,
        until: int | None = None,
        progress: ProgressReport | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Process what is recorded now (or up to ``until``); return how many events.

        Three things overlap: reading the next page, folding this one, and writing the one
        before (each batch still commits alone and in order, so exactly-once is kept).
        """
        position = self.position
        head = self.ledger.recorder.max_notification_id() or 0
        if until is not None:
            head = min(head, until)
        started = time.monotonic()
        done = 0
        name = self.ledger.name
        to_event = self.ledger.mapper.to_domain_event
        projection = self.projection

        def read(after: int) -> tuple[int, list[tuple[Any, Tracking]]]:
            """The next page, decoded (decompressing lets go of the GIL: it overlaps)."""
            if stop is not None and stop.is_set():
                return after, []
            page = self.ledger.recorder.select_notifications(
                start=after, limit=self.page_size, stop=head, inclusive_of_start=False
            )
            last = page[-1].id if page else after
            # Only member and program events change a view; the rest (ownership records of
            # order and redemption ids) are tracked without being decoded.
            return last, [
                (to_event(n) if n.topic.startswith(PROJECTED) else None, Tracking(name, n.id))
                for n in page
            ]

        if position >= head:
            return 0
        writing: Future[None] | None = None

        def flush() -> None:
            nonlocal writing
            if writing is not None:
                pending, writing = writing, None
                pending.result()

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="daifuku-projection") as pool:
            projection.flush = flush
            try:
                reading: Future[tuple[int, list[tuple[Any, Tracking]]]] | None
                reading = pool.submit(read, position)
                touched: dict[UUID, Touched] = {}
                folded: Tracking | None = None  # the last position folded and not yet written
                since_written = 0
                while reading is not None:
                    position, batch = reading.result()
                    if batch:
                        reading = pool.submit(read, position) if position < head else None
                        projection.fold(batch, touched)
                        folded = batch[-1][1]
                        since_written += len(batch)
                        done += len(batch)
                    else:
                        reading = None
                    if folded is not None and (reading is None or since_written >= self.rows_every):
                        prepared = projection.prepare_rows(touched, folded)
                        touched, folded, since_written = {}, None, 0
                        flush()
                        writing = pool.submit(projection.write_prepared, prepared)
                    if progress is not None and batch:
                        progress(done, done + head - position, time.monotonic() - started)
                flush()
            finally:
                projection.flush = lambda: None
                if writing is not None:  # failing: let the write in flight end, then raise
                    wait([writing])
        return done

    def refresh(self, now: datetime | None = None, most: int = REFRESH_MOST) -> int:
        """Recompute the counters of the rows that time alone changed by ``now`` (a lot
        matured, a stage threshold passed, a guarantee window closed): the summary's totals
        then hold at ``now`` without a read folding anything. At most ``most`` rows a call (the
        worker goes back to the log in between); how many were refreshed."""
        moment = now or self.ledger.clock.now()
        view = self.projection.view
        done = 0
        while done < most:
            due = view.due_rows(moment, min(REFRESH_PAGE, most - done))
            if not due:
                break
            refreshes = []
            for row in due:
                member = self.projection.member_at(member_uuid(row.member_id), row.version)
                terms = self.projection.terms_of(row.program_version)
                counters, refresh_at = figures(member, moment, terms)
                refreshes.append(
                    Refresh(row.member_id, row.version, row.refresh_at, counters, refresh_at)
                )
            written = view.refresh(refreshes)
            done += len(due)
            if written < len(due):  # some rows moved on meanwhile: the next pass sees them
                break
        return done

    def run(
        self,
        stop: threading.Event,
        poll_seconds: float = 0.2,
        progress: ProgressReport | None = None,
    ) -> None:
        """Catch up, refresh what time changed, then follow the log until ``stop`` is set."""
        while not stop.is_set():
            caught_up = self.catch_up(progress=progress, stop=stop)
            refreshed = self.refresh()
            if caught_up == 0 and refreshed == 0:
                stop.wait(poll_seconds)


def figures(
    member: Member, moment: datetime, terms: Terms
) -> tuple[dict[str, int], datetime | None]:
    """What ``member`` adds to the analytics' totals at ``moment`` (its summary counters and
    its place in the value histograms), and the first later instant at which that may change
    with time alone (a status change falling due, a guarantee window closing)."""
    return _figures(
        member,
        moment,
        terms,
        member.status(moment, terms),
        member.status_changes_at(moment, terms),
        member.value_facts(),
    )


def _figures(
    member: Member,
    moment: datetime,
    terms: Terms,
    held: MemberStatus,
    changes_at: datetime | None,
    facts: value.MemberFacts,
) -> tuple[dict[str, int], datetime | None]:
    promises = member.promises()
    found = analytics.contribution(
        held.holding(),
        promises,
        [made.steps() for made in member.referrals.values()],
        moment,
        terms.rules.currency,
    )
    if facts.purchases:
        net = analytics.scaled(value.net_contribution(facts, terms.rules.point_value))
        assert facts.last_purchase_at is not None
        found["buyers"] = 1
        if net:
            found["net"] = net
        if net < 0:
            found["negative"] = 1
        found.update(net_keys(net))
        found[frequency_key(facts.purchases)] = 1
        found[last_day_key(facts.last_purchase_at)] = 1
        found[last_hour_key(facts.last_purchase_at)] = 1
    closes_at = analytics.window_closes_at(promises, moment)
    changes = [at for at in (changes_at, closes_at) if at is not None]
    return found, min(changes) if changes else None


def member_row(member: Member, entry: Touched, shapes: Shapes) -> MemberStatusRow:
    """The row of ``member`` as of its latest event at ``entry.moment``."""
    moment, terms = entry.moment, entry.terms
    future = member.projected(moment, terms)  # rewards due by then read as given, as live
    held = future.status(moment, terms)
    valid_until = future.status_changes_at(moment, terms)
    facts = member.value_facts()
    counters, refresh_at = _figures(member, moment, terms, held, valid_until, facts)
    return MemberStatusRow(
        member_id=member.member_id,
        status=shapes.status(held),
        version=member.version,
        updated_at=moment,
        applied=entry.applied,
        program_version=terms.version,
        valid_until=valid_until,
        referrals=plain(
            shapes.referrals(member.member_id, [future.referrals[r] for r in future.referral_order])
        )
        if future.referral_order
        else [],
        value=facts.to_dict(),
        figures=counters,
        refresh_at=refresh_at,
        net_key=analytics.scaled(value.net_contribution(facts, terms.rules.point_value)),
        last_purchase_at=facts.last_purchase_at,
    )


def replay(
    ledger: Ledger, view: MemberStatusView, shapes: Shapes, progress: ProgressReport | None = None
) -> int:
    """Empty the view and its tracking, then rebuild it from the first event."""
    view.delete_all()
    projection = MemberStatusProjection(view, ledger, shapes)
    worker = ProjectionWorker(ledger, projection, REPLAY_PAGE, REPLAY_ROWS_EVERY)
    return worker.catch_up(progress=progress)


class ProjectionThread(BackgroundLoop):
    """Keeps the views up to date from a daemon thread (``daifuku serve``'s embedded worker).

    A failed batch is logged and retried from the view's position after a pause: nothing is
    applied twice, since the batch's rows and position were not written.
    """

    thread_name = "daifuku-projection"

    def __init__(
        self,
        ledger: Ledger,
        view: MemberStatusView,
        shapes: Shapes,
        poll_seconds: float = 0.05,
    ) -> None:
        self.ledger = ledger
        self.view = view
        self.shapes = shapes
        self.poll_seconds = poll_seconds
        super().__init__()

    def _run(self) -> None:
        while not self._stopping.is_set():
            worker = ProjectionWorker(
                self.ledger, MemberStatusProjection(self.view, self.ledger, self.shapes)
            )
            try:
                worker.run(self._stopping, poll_seconds=self.poll_seconds)
            except Exception:
                log.exception("projection batch failed; retrying from the view's position")
                self._stopping.wait(1.0)
