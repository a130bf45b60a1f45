"""The scheduler's index: each member's next due time, kept up to date from the log, so a run
visits only the members with something due."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from domain import eventlog
from domain.actors import SCHEDULER, Cause
from domain.members import Member, Terms

if TYPE_CHECKING:
    from domain.ledger import Ledger


# Notes waiting for a run at most (a run takes them all in): past it, the scan loads members.
NOTED_MOST = 100_000


class DueIndex:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.due: dict[UUID, datetime] = {}
        # The member version each entry was found at: a member the log shows changed is
        # loaded again only if it changed after that (not for this process's own writes).
        self.known: dict[UUID, int] = {}
        self.scanned_to = 0
        self.lock = threading.Lock()
        # What this process's own writes found (``noted``), taken in by the next run: a
        # writer never waits for a run in progress.
        self.following = False
        self._noted: dict[UUID, tuple[int, datetime | None, tuple[int, int, int]]] = {}
        self._noted_lock = threading.Lock()
        self.notice_days: tuple[int, int, int] | None = (
            None  # the rules the due times were found by
        )

    def record(self, now: datetime, cause: Cause | None = None) -> int:
        """Record every change due by ``now``; how many were recorded."""
        with self.lock:
            self.following = True
            run = cause or Cause(f"scheduler:{now.isoformat()}", SCHEDULER)
            terms = self.ledger.terms()
            notice_days = days_of(terms)
            if notice_days != self.notice_days:
                # Notices and dormancy fall due by the program's days: other days, other
                # times, every member's.
                self.due.clear()
                self.known.clear()
                self.scanned_to = 0
                self.notice_days = notice_days
            self._take_noted()
            for changed, scanned_to in eventlog.changed_members(self.ledger, self.scanned_to):
                for uid, version in changed.items():
                    if self.known.get(uid, 0) < version:
                        self._remember(uid, terms)
                self.scanned_to = scanned_to
            recorded = 0
            for uid in [uid for uid, due in self.due.items() if due <= now]:
                recorded += self._catch_up(uid, now, run, terms)
            return recorded

    def _remember(self, uid: UUID, terms: Terms) -> None:
        writes = self.ledger.writes
        with writes.lock(uid):
            member: Member = self.ledger.repository.get(uid, deepcopy_from_cache=False)
            due = member.next_due_at(terms)
            self._set(uid, member.version, due)

    def noted(self, members: list[Member], terms: Terms) -> None:
        """Members this process has just saved (under their locks): their next due times,
        so that the next run need not load them again."""
        days = days_of(terms)
        found = [(member.id, member.version, member.next_due_at(terms)) for member in members]
        with self._noted_lock:
            if len(self._noted) >= NOTED_MOST:  # no run is taking them in: the scan will do
                return
            for uid, version, due in found:
                kept = self._noted.get(uid)
                if kept is None or kept[0] < version:
                    self._noted[uid] = (version, due, days)

    def _take_noted(self) -> None:
        with self._noted_lock:
            noted, self._noted = self._noted, {}
        for uid, (version, due, days) in noted.items():
            # A time found under other notice days is not this index's: the scan finds it.
            if days == self.notice_days and self.known.get(uid, 0) < version:
                self._set(uid, version, due)

    def _set(self, uid: UUID, version: int, due: datetime | None) -> None:
        self.known[uid] = version
        if due is None:
            self.due.pop(uid, None)
        else:
            self.due[uid] = due

    def _catch_up(self, uid: UUID, now: datetime, cause: Cause, terms: Terms) -> int:
        ledger = self.ledger
        with ledger.writes.lock(uid):
            member_id = ledger.writes.member(uid, str(uid)).member_id

        def command(member: Member, _: datetime, __: Member | None) -> tuple[int, bool]:
            return member.record_due(now, terms, cause, ledger.clock.now()), True

        recorded = ledger.writes.change(member_id, command).value
        self._remember(uid, terms)
        return recorded


def days_of(terms: Terms) -> tuple[int, int, int]:
    """The program's days that move due times: expiry and guarantee notices, dormancy."""
    rules = terms.rules
    return (rules.expiry_notice_days, rules.guarantee_notice_days, rules.dormant_days)
