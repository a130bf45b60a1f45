"""How a command changes members safely: striped locks, one retry loop on version conflicts,
and the cached copy evicted whenever a change fails, so no half-made change is kept.

Two writers of one member in different processes meet as a version conflict in the event
store; the loser reloads and runs its command again.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.actors import Actor, Cause
from domain.clock import Clock
from domain.errors import Conflict, DomainError, UnknownMember
from domain.members import Member, Ownership, member_uuid

T = TypeVar("T")
# A command gets the member, the time, and the partner it named (if any); it returns its
# answer and whether it changed anything.
Command = Callable[[Member, datetime, Member | None], tuple[T, bool]]
# A creation gets the member if it exists already, the time and the partner; it returns its
# answer and the aggregates to save (none for a repeat).
Creation = Callable[[Member | None, datetime, Member | None], tuple[T, list[Aggregate]]]


@dataclass(frozen=True)
class Written(Generic[T]):
    """A command's answer; whether it recorded something; where the log held its last event (for
    a repeat that recorded nothing, the log's head): a read model at that position has it."""

    value: T
    created: bool
    position: int


class MemberWrites:
    lock_stripes = 256
    max_attempts = 20

    def __init__(self, app: Application[UUID], clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self._stripes = [threading.Lock() for _ in range(self.lock_stripes)]

    def lock(self, uid: UUID) -> threading.Lock:
        return self._stripes[uid.int % self.lock_stripes]

    @contextlib.contextmanager
    def locks(self, uids: list[UUID]) -> Iterator[None]:
        """The stripes of several members, always taken in the same order."""
        stripes = sorted({uid.int % self.lock_stripes for uid in uids})
        with contextlib.ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._stripes[stripe])
            yield

    @contextlib.contextmanager
    def every_lock(self) -> Iterator[None]:
        """Every stripe: no other thread of this process changes a member meanwhile."""
        with contextlib.ExitStack() as stack:
            for stripe in self._stripes:
                stack.enter_context(stripe)
            yield

    def member(self, uid: UUID, member_id: str) -> Member:
        """The cached member (brought up to date by one indexed read): not a copy."""
        try:
            member: Member = self.app.repository.get(uid, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            raise UnknownMember(member_id) from None
        return member

    def evict(self, *uids: UUID) -> None:
        cache = self.app.repository.cache
        if cache is not None:
            for uid in uids:
                with contextlib.suppress(KeyError):
                    cache.get(uid, evict=True)

    def owner(self, kind: str, key: str, missing: Exception) -> str:
        """The member a natural key (an order, a redemption, a referral code) belongs to."""
        try:
            found: Ownership = self.app.repository.get(
                Ownership.key_id(kind, key), deepcopy_from_cache=False
            )
        except AggregateNotFoundError:
            raise missing from None
        return found.member_id

    def check_owner(self, kind: str, key: str, member_id: str) -> None:
        """A key another member holds is a conflict."""
        try:
            found = self.owner(kind, key, LookupError())
        except LookupError:
            return
        if found != member_id:
            raise Conflict(f"{kind} {key!r} belongs to another member", "member_id")

    def save(self, *aggregates: Aggregate) -> int:
        """Save in one transaction; the position of the last event recorded."""
        return max(recording.notification.id for recording in self.app.save(*aggregates))

    def retry_pause(self, attempt: int) -> None:
        time.sleep(random.uniform(0, 0.002 * (attempt + 1)))

    def create(
        self, member_id: str, decide: Creation[T], partner_id: str | None = None
    ) -> Written[T]:
        """Create a member (with its ``partner``, a referrer, changed in the same transaction)
        unless it exists; two processes creating it at once meet as a conflict in the store,
        and the loser finds the member the winner created."""
        uid = member_uuid(member_id)
        uids = [uid] if partner_id is None else [uid, member_uuid(partner_id)]
        for attempt in range(self.max_attempts):
            with self.locks(uids):
                now = self.clock.now()  # under the locks: each member's events in time order
                try:
                    existing: Member | None = self.member(uid, member_id)
                except UnknownMember:
                    existing = None
                partner = None
                if existing is None and partner_id is not None:
                    partner = self.member(uids[1], partner_id)
                try:
                    result, changed = decide(existing, now, partner)
                    if not changed:
                        head = self.app.recorder.max_notification_id() or 0
                        return Written(result, False, head)
                    return Written(result, True, self.save(*changed))
                except IntegrityError:
                    self.evict(*uids)
                except BaseException:
                    self.evict(*uids)  # a cached partner may hold events that were not saved
                    raise
            self.retry_pause(attempt)
        raise Conflict(f"member {member_id!r} is being created concurrently; try again")

    def change(
        self,
        member_id: str,
        command: Command[T],
        new_owner: tuple[str, str] | None = None,
        partner_of: Callable[[Member], str | None] | None = None,
    ) -> Written[T]:
        """Run a command on the cached member in place, and save what it changed.

        ``partner_of`` names a second member the command may change in the same transaction
        (a referrer). Most commands change one member: its lock is taken, it is read once, and
        the command runs. Only when it names a partner are both locks taken (in order) and both
        read. ``new_owner`` is the natural key (kind, key) the change takes for the member when
        it creates something: another member's key is a conflict, whatever else fails.
        """
        uid = member_uuid(member_id)
        for attempt in range(self.max_attempts):
            with self.lock(uid):
                member = self.member(uid, member_id)
                partner_id = None if partner_of is None else partner_of(member)
                if partner_id is None:
                    done = self._run(member, None, command, new_owner)
                    if done is not None:
                        return done
            if partner_id is not None:
                uids = [uid, member_uuid(partner_id)]
                with self.locks(uids):
                    member = self.member(uid, member_id)
                    if partner_of is not None and partner_of(member) != partner_id:
                        continue  # the partner changed while no lock was held: start again
                    partner = self.member(uids[1], partner_id)
                    done = self._run(member, partner, command, new_owner)
                    if done is not None:
                        return done
            if new_owner is not None:
                self.check_owner(*new_owner, member_id)
            self.retry_pause(attempt)
        raise Conflict(f"member {member_id!r} is changing too fast; try again")

    def _run(
        self,
        member: Member,
        partner: Member | None,
        command: Command[T],
        new_owner: tuple[str, str] | None,
    ) -> Written[T] | None:
        """Run ``command`` and save what it changed (under the members' locks); None when the
        save met a concurrent writer, so the caller runs it again on fresh copies."""
        uids = [member.id] if partner is None else [member.id, partner.id]
        try:
            result, created = command(member, self.clock.now(), partner)
            changed: list[Aggregate] = [
                m for m in (member, partner) if m is not None and m.pending_events
            ]
            if not changed:
                # Nothing new (a repeat): any position at or after the original's.
                head = self.app.recorder.max_notification_id() or 0
                return Written(result, created, head)
            if created and new_owner is not None:
                # The key is taken by the change just decided: its cause and actor are the key's.
                last: Any = member.pending_events[-1]
                cause = Cause(last.cause, Actor(**last.actor))
                changed.append(
                    Ownership.record(*new_owner, member.member_id, self.clock.now(), cause)
                )
            return Written(result, created, self.save(*changed))
        except IntegrityError:
            self.evict(*uids)
            return None
        except DomainError:
            self.evict(*uids)
            if new_owner is not None:
                self.check_owner(*new_owner, member.member_id)
            raise
        except BaseException:
            self.evict(*uids)
            raise
