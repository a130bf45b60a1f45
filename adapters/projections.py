"""The projection that keeps the member-status view, and the worker that feeds it the log.

The worker reads the ledger's notification log a page at a time from the view's own tracking
position (SQLite has no subscriptions, so it polls on both databases). Every event's position
is recorded: a member event's with its row, any other event's on its own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from adapters.views import VIEW_NAME, MemberStatusView
from domain.ledger import Ledger
from domain.members import Member, Terms
from domain.program import PROGRAM_ID, Program

PAGE = 500
PROGRAM_TOPICS = [get_topic(Program.Started), get_topic(Program.Published)]

# (events done, events to do, seconds since the start)
ProgressReport = Callable[[int, int, float], None]


class MemberStatusProjection(Projection[MemberStatusView]):
    """Each member's status as of its latest event, under the program known at that position."""

    name = VIEW_NAME
    cache_size = 10_000

    def __init__(self, view: MemberStatusView, ledger: Ledger) -> None:
        super().__init__(view)
        self.ledger = ledger
        self._members: OrderedDict[UUID, Member] = OrderedDict()
        self._program: Program | None = None
        self._terms: dict[int, Terms] = {}

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Program.Started | Program.Published):
            self._program = self._fold_program(domain_event)
            self.view.insert_tracking(tracking)
        elif isinstance(domain_event, Member.Enrolled | Member.Changed):
            member = self._fold_member(domain_event)
            moment: datetime = domain_event.timestamp
            status = member.status(moment, self._terms_at(moment, tracking))
            self.view.upsert(
                member.member_id, status, domain_event.originator_version, tracking, moment
            )
        else:
            self.view.insert_tracking(tracking)

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
        if self._program is None:
            self._program = self._program_before(tracking.notification_id)
        version = 1
        for entry in self._program.versions:
            if entry["published_at"] <= moment:
                version = entry["version"]
        terms = self._terms.get(version)
        if terms is None:
            terms = Terms(version, self._program.at_version(version).rules)
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

    def __init__(self, ledger: Ledger, projection: MemberStatusProjection) -> None:
        self.ledger = ledger
        self.projection = projection

    @property
    def position(self) -> int:
        return self.projection.view.max_tracking_id(self.ledger.name) or 0

    def catch_up(
        self,
        until: int | None = None,
        progress: ProgressReport | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Process what is recorded now (or up to ``until``); return how many events."""
        position = self.position
        head = self.ledger.recorder.max_notification_id() or 0
        if until is not None:
            head = min(head, until)
        started = time.monotonic()
        done = 0
        while position < head and not (stop is not None and stop.is_set()):
            page = self.ledger.recorder.select_notifications(
                start=position, limit=PAGE, stop=head, inclusive_of_start=False
            )
            if not page:
                break
            for notification in page:
                event = self.ledger.mapper.to_domain_event(notification)
                self.projection.process_event(event, Tracking(self.ledger.name, notification.id))
                done += 1
            position = page[-1].id
            if progress is not None:
                progress(done, done + head - position, time.monotonic() - started)
        return done

    def run(
        self,
        stop: threading.Event,
        poll_seconds: float = 0.2,
        progress: ProgressReport | None = None,
    ) -> None:
        """Catch up, then follow the log until ``stop`` is set."""
        while not stop.is_set():
            if self.catch_up(progress=progress, stop=stop) == 0:
                stop.wait(poll_seconds)


def replay(ledger: Ledger, view: MemberStatusView, progress: ProgressReport | None = None) -> int:
    """Empty the view and its tracking, then rebuild it from the first event."""
    view.delete_all()
    return ProjectionWorker(ledger, MemberStatusProjection(view, ledger)).catch_up(
        progress=progress
    )
