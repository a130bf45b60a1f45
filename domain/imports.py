"""Histories from before Daifuku: import records applied as if Daifuku had run all along.

A record is an enrolment, a purchase, a refund or a redemption with its own id and business
time. ``plan`` puts them in the order they are applied: members linked by referrals together,
and within them by business time, so each member's history is replayed as it happened and the
time-driven changes between its records (lots maturing and expiring, tier reviews, referral
rewards) are recorded at the times they fell due. ``Importer`` applies them in batches: every
record of a batch runs the same checks and commands as a single request, and the events of all
its members are saved in one transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain import referrals
from domain.actors import Actor, Cause
from domain.errors import Conflict, DomainError, UnknownMember, UnknownOrder, UnknownReferralCode
from domain.members import LineItem, Member, Ownership, member_uuid, referral_code_for

if TYPE_CHECKING:
    from domain.ledger import Ledger

KINDS = ("member", "purchase", "refund", "redemption")
# At one instant an enrolment comes before the purchases, a purchase before its refunds.
RANK = {kind: rank for rank, kind in enumerate(KINDS)}
APPLIED, PRESENT, REJECTED = "applied", "present", "rejected"


@dataclass
class Record:
    """One import record, checked for shape: its line, kind, own id and business time."""

    line: int
    kind: str
    id: str
    at: datetime
    data: dict[str, Any]
    member_id: str | None = None  # a refund's is its order's, found by ``plan``
    key: datetime | None = field(default=None, repr=False)  # when it is applied
    group: str | None = field(default=None, repr=False)  # members applied together


@dataclass(frozen=True)
class Outcome:
    line: int
    kind: str
    id: str
    status: str  # applied, present or rejected
    error: DomainError | None = None


def plan(
    records: Iterable[Record],
    order_owner: Callable[[str], str | None],
    referrer_of: Callable[[list[str]], dict[str, str]] | None = None,
) -> tuple[list[Record], list[Outcome]]:
    """The records in the order they are applied, and the refunds whose order is neither in
    the records nor in the store (``order_owner`` finds an order's member there;
    ``referrer_of`` the referrers of members enrolled before, by member).

    Each record is applied at its own time, or at the time of the record it depends on when
    that is later (a purchase dated before its enrolment, a refund before its purchase, a
    friend's enrolment before its referrer's): such a record is late, and follows the
    late-order rule. Members linked by a referral are applied together, in time order, since
    a referee's enrolment, purchases and refunds change its referrer's ledger at their own
    times (whether the link is in these records or in the store, from an earlier import);
    otherwise all of a member's records are applied together, which keeps each member loaded
    once.
    """
    records = list(records)
    members = {r.id: r for r in records if r.kind == "member"}
    purchases = {r.id: r for r in records if r.kind == "purchase"}
    rejected: list[Outcome] = []
    for record in records:
        if record.kind == "member":
            record.member_id = record.id
        elif record.kind == "refund":
            order_id = record.data["order_id"]
            bought = purchases.get(order_id)
            record.member_id = bought.data["member_id"] if bought else order_owner(order_id)
            if record.member_id is None:
                rejected.append(
                    Outcome(record.line, record.kind, record.id, REJECTED, UnknownOrder(order_id))
                )
        else:
            record.member_id = record.data["member_id"]
    kept = [r for r in records if r.member_id is not None]

    # Members linked by referral codes given in the records, or recorded before, form one group.
    code_owner = {referral_code_for(member_id): member_id for member_id in members}
    referrer: dict[str, str] = {}
    for member in members.values():
        code = member.data.get("referral_code")
        found = code_owner.get(normal_code(code) or "") if code else None
        if found is not None and found != member.id:
            referrer[member.id] = found
    if referrer_of is not None:
        enrolled_before = sorted(
            {r.member_id for r in kept if r.member_id is not None and r.member_id not in members}
        )
        referrer.update(referrer_of(enrolled_before))
    group: dict[str, str] = {}

    def root(member_id: str) -> str:
        while (parent := group.get(member_id, member_id)) != member_id:
            group[member_id] = group.get(parent, parent)
            member_id = parent
        return member_id

    for referee, referred_by in referrer.items():
        if root(referee) != root(referred_by):
            group[root(referee)] = root(referred_by)

    # A record is applied no earlier than what it depends on.
    keys: dict[str, datetime] = {}

    def enrolled(member_id: str, seen: frozenset[str] = frozenset()) -> datetime | None:
        """When the member's enrolment is applied: at its time, or its referrer's if later."""
        found = members.get(member_id)
        if found is None:
            return None
        if member_id not in keys:
            by = referrer.get(member_id)
            after = None if by is None or by in seen else enrolled(by, seen | {member_id})
            keys[member_id] = found.at if after is None else max(found.at, after)
        return keys[member_id]

    for member in members.values():
        member.key = enrolled(member.id)
    for record in kept:
        if record.kind in ("purchase", "redemption"):
            assert record.member_id is not None
            after = enrolled(record.member_id)
            record.key = record.at if after is None else max(record.at, after)
    for record in kept:
        if record.kind == "refund":
            bought = purchases.get(record.data["order_id"])
            after = None if bought is None else bought.key
            if after is None and record.member_id is not None:
                after = enrolled(record.member_id)
            record.key = record.at if after is None else max(record.at, after)

    first: dict[str, int] = {}
    for record in kept:
        assert record.member_id is not None
        record.group = root(record.member_id)
        first.setdefault(record.group, record.line)

    def order(record: Record) -> tuple[int, datetime, int, int]:
        assert record.group is not None and record.key is not None
        return (first[record.group], record.key, RANK[record.kind], record.line)

    return sorted(kept, key=order), rejected


def normal_code(code: str) -> str | None:
    return referrals.normalise_code(code)


class Importer:
    """Applies planned records in batches, each batch in one transaction.

    A batch holds every member lock of this process while it runs (so live requests here wait
    for at most one batch); another process writing the same members meets it as a version
    conflict, and the batch runs again on fresh copies. A record the ledger refuses is
    rejected alone: when its command had already recorded something (a due change before a
    redemption found too few points), the batch runs again without it.
    """

    max_attempts = 20

    def __init__(
        self, ledger: Ledger, name: str, batch_size: int = 250, actor: Actor | None = None
    ) -> None:
        self.ledger = ledger
        self.name = name
        self.batch_size = batch_size
        self.actor = actor or Actor.importer(name)

    def run(self, records: Iterable[Record]) -> Iterator[list[Outcome]]:
        """The outcomes of each batch, in the records' order, once it is saved."""
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield self.apply(batch)
                batch = []
        if batch:
            yield self.apply(batch)

    def apply(self, batch: list[Record]) -> list[Outcome]:
        rejected: dict[int, DomainError] = {}
        for attempt in range(self.max_attempts):
            outcomes = _Batch(self, batch, rejected, fresh=attempt > 0).run()
            if outcomes is not None:
                return outcomes
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise Conflict("the members of this import are changing too fast; try again")


def _cached(cache: Any, uid: Any) -> bool:
    try:
        cache.get(uid)
    except KeyError:
        return False
    return True


class _Batch:
    """One attempt at a batch: the members it changes, loaded once, changed in place."""

    def __init__(
        self,
        importer: Importer,
        records: list[Record],
        rejected: dict[int, DomainError],
        fresh: bool,
    ) -> None:
        self.importer = importer
        self.ledger = importer.ledger
        self.records = records
        self.rejected = rejected
        self.fresh = fresh
        self.members: dict[str, Member | None] = {}
        self.created: list[Aggregate] = []  # new members and the keys they took
        self.keys: dict[tuple[str, str], tuple[str, int]] = {}  # taken here: member, index
        self.codes: dict[str, str] = {}  # referral codes given out here
        self.absent: set[str] = set()  # members not in the store
        self.free_codes: set[str] = set()  # first-choice referral codes not taken in the store

    def run(self) -> list[Outcome] | None:
        writes = self.ledger.writes
        with writes.every_lock():
            try:
                return self._run()
            except BaseException:
                self._evict()
                raise

    def _probe(self) -> None:
        """Which members of the batch are new, and whether their first-choice referral codes
        are free: one query for the batch instead of two for each new member."""
        cache = self.ledger.repository.cache
        unknown = set()
        for record in self.records:
            member_id = record.member_id
            assert member_id is not None
            uid = member_uuid(member_id)
            if self.fresh or cache is None or not _cached(cache, uid):
                unknown.add(member_id)
        codes = {
            r.id: referral_code_for(r.id)
            for r in self.records
            if r.kind == "member" and r.id in unknown
        }
        ids = [member_uuid(m) for m in unknown]
        ids += [Ownership.key_id("referral-code", code) for code in codes.values()]
        found = self.ledger.existing(ids)
        self.absent = {m for m in unknown if member_uuid(m) not in found}
        self.free_codes = {
            code for code in codes.values() if Ownership.key_id("referral-code", code) not in found
        }
        new = [m for m in codes if m in self.absent]
        if new:
            self.ledger.sealer.prepare(new)

    def _run(self) -> list[Outcome] | None:
        now = self.ledger.clock.now()
        self._probe()
        outcomes: list[Outcome] = []
        for index, record in enumerate(self.records):
            error = self.rejected.get(index)
            if error is None:
                involved = self._involved(record)
                before = self._pending(involved)
                try:
                    created = self._apply(index, record, now)
                except DomainError as refused:
                    self.rejected[index] = error = refused
                    if self._pending(involved) != before:
                        self._evict()  # it had recorded something: run again without it
                        return None
                else:
                    status = APPLIED if created else PRESENT
                    outcomes.append(Outcome(record.line, record.kind, record.id, status))
                    continue
            outcomes.append(Outcome(record.line, record.kind, record.id, REJECTED, error))
        changed: list[Aggregate] = [m for m in self.members.values() if m and m.pending_events]
        changed.extend(self.created)
        if not changed:
            return outcomes
        try:
            self.ledger.save(*changed)
        except IntegrityError:
            self._evict()
            self._find_taken_keys()
            return None
        return outcomes

    def _involved(self, record: Record) -> list[str]:
        """The members a record may change: its own, and its referrer."""
        assert record.member_id is not None
        member = self.members.get(record.member_id)
        if member is None:
            code = record.data.get("referral_code") if record.kind == "member" else None
            referrer = self.codes.get(normal_code(code) or "") if code else None
            return [record.member_id] if referrer is None else [record.member_id, referrer]
        partner = referrals.open_referrer(member)
        return [record.member_id] if partner is None else [record.member_id, partner]

    def _pending(self, member_ids: list[str]) -> int:
        found = (self.members.get(member_id) for member_id in member_ids)
        return sum(len(m.pending_events) for m in found if m is not None)

    def _evict(self) -> None:
        self.ledger.writes.evict(*(member_uuid(member_id) for member_id in self.members))

    def _find_taken_keys(self) -> None:
        """After a failed save: the records whose order or redemption id another member holds
        are rejected, as a single request would be; anything else was a concurrent writer."""
        writes = self.ledger.writes
        for (kind, key), (member_id, index) in self.keys.items():
            try:
                writes.check_owner(kind, key, member_id)
            except Conflict as taken:
                self.rejected[index] = taken

    def _member(self, member_id: str) -> Member | None:
        if member_id in self.members:
            return self.members[member_id]
        if member_id in self.absent:
            self.members[member_id] = None
            return None
        uid = member_uuid(member_id)
        found: Member | None = None
        cache = self.ledger.repository.cache
        if cache is not None and not self.fresh:
            # Optimistic: a copy another process has moved on from fails at the save, and the
            # batch runs again with fresh ones.
            try:
                found = cast(Member, cache.get(uid))
            except KeyError:
                found = None
        if found is None:
            try:
                found = self.ledger.writes.member(uid, member_id)
            except UnknownMember:
                found = None
        self.members[member_id] = found
        return found

    def _existing(self, member_id: str) -> Member:
        found = self._member(member_id)
        if found is None:
            raise UnknownMember(member_id)
        return found

    def _cause(self, record: Record) -> Cause:
        return Cause(f"import:{self.importer.name}:{record.line}", self.importer.actor)

    def _take(self, kind: str, key: str, member_id: str) -> None:
        """A key another member took earlier in this batch is a conflict."""
        held = self.keys.get((kind, key))
        if held is not None and held[0] != member_id:
            raise Conflict(f"{kind} {key!r} belongs to another member", "member_id")

    def _apply(self, index: int, record: Record, now: datetime) -> bool:
        data, cause = record.data, self._cause(record)
        if record.kind == "member":
            return self._enrol(record, now, cause)
        assert record.member_id is not None
        member = self._existing(record.member_id)
        partner_id = referrals.open_referrer(member)
        partner = None if partner_id is None else self._existing(partner_id)
        if record.kind == "purchase":
            self._take("order", record.id, member.member_id)
            items = data.get("items")
            purchase = self.ledger.purchase_command(
                record.id,
                data["amount"],
                data["currency"],
                record.at,
                None if items is None else [LineItem(**item) for item in items],
                data.get("guarantee"),
                cause,
                imported=True,
            )
            key = ("order", record.id)
            created = self._taking(key, member.member_id, purchase, member, now, partner)
        elif record.kind == "refund":
            order_id = data["order_id"]
            if order_id not in member.purchases:
                raise UnknownOrder(order_id)
            refund = self.ledger.refund_command(
                order_id, record.id, data.get("amount"), data.get("reason"), cause, record.at
            )
            _, created = refund(member, now, partner)
            return created
        else:
            self._take("redemption", record.id, member.member_id)
            redemption = self.ledger.redemption_command(
                record.id, data.get("reward"), data.get("points"), cause, record.at
            )
            key = ("redemption", record.id)
            created = self._taking(key, member.member_id, redemption, member, now, None)
        if created:
            self.keys[key] = (member.member_id, index)
            self.created.append(Ownership.record(*key, member.member_id, now, cause))
        return created

    def _taking(
        self,
        key: tuple[str, str],
        member_id: str,
        command: Any,
        member: Member,
        now: datetime,
        partner: Member | None,
    ) -> bool:
        """Run a command that takes ``key`` for the member: refused, it answers as a single
        request does, a conflict when another member holds the key, whatever else failed."""
        try:
            _, created = command(member, now, partner)
        except DomainError:
            self.ledger.writes.check_owner(*key, member_id)
            raise
        return bool(created)

    def _enrol(self, record: Record, now: datetime, cause: Cause) -> bool:
        data = record.data
        code = self.ledger.referral_code(data.get("referral_code"))
        referrer_id = None
        if code is not None:
            referrer_id = self.codes.get(code) or self.ledger.writes.owner(
                "referral-code", code, UnknownReferralCode(str(data.get("referral_code")))
            )
        decide = self.ledger.enrolment_command(
            record.id,
            data["email"],
            data.get("name"),
            cause,
            code,
            referrer_id,
            record.at,
            taken_codes=self.codes,
            free_codes=self.free_codes,
            answer=False,
        )
        existing = self._member(record.id)
        referrer = None
        if existing is None and referrer_id is not None:
            referrer = self._existing(referrer_id)
        _, changed = decide(existing, now, referrer)
        for aggregate in changed:
            if isinstance(aggregate, Member):
                if aggregate.member_id == record.id:
                    self.members[record.id] = aggregate
            else:
                assert isinstance(aggregate, Ownership)
                self.codes[aggregate.key] = record.id
                self.created.append(aggregate)
        return bool(changed)
