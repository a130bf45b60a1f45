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


class DueIndex:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.due: dict[UUID, datetime] = {}
        self.scanned_to = 0
        self.lock = threading.Lock()
        self.notice_days: tuple[int, int, int] | None = (
            None  # the rules the due times were found by
        )

    def record(self, now: datetime, cause: Cause | None = None) -> int:
        """Record every change due by ``now``; how many were recorded."""
        with self.lock:
            run = cause or Cause(f"scheduler:{now.isoformat()}", SCHEDULER)
            terms = self.ledger.terms()
            rules = terms.rules
            notice_days = (
                rules.expiry_notice_days,
                rules.guarantee_notice_days,
                rules.dormant_days,
            )
            if notice_days != self.notice_days:
                # Notices and dormancy fall due by the program's days: other days, other
                # times, every member's.
                self.due.clear()
                self.scanned_to = 0
                self.notice_days = notice_days
            for changed, scanned_to in eventlog.changed_members(self.ledger, self.scanned_to):
                for uid in changed:
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
