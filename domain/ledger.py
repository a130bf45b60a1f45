"""The Ledger application: the use cases of the loyalty program over the event store.

Each command gets a member, lets it decide, and saves what it decided (``domain/writes.py``
holds the locks and retries around that); each query returns the model's own values, which
``api/representations.py`` turns into JSON.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Container, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, IntegrityError, JSONTranscoder, Recording
from eventsourcing.utils import strtobool

from domain import eventlog, referrals, reports, snapshots, transcodings
from domain.actors import SCHEDULER, Actor, Cause
from domain.clock import Clock, SystemClock
from domain.due_index import DueIndex
from domain.errors import (
    Conflict,
    EnrolledAtOutOfRange,
    OccurredAtOutOfRange,
    SelfReferral,
    UnknownFollowup,
    UnknownGuarantee,
    UnknownMember,
    UnknownOrder,
    UnknownPlan,
    UnknownRedemption,
    UnknownReferralCode,
    WrongCurrency,
)
from domain.members import (
    LineItem,
    MadeReferral,
    Member,
    MemberStatus,
    Ownership,
    Purchase,
    Redemption,
    Terms,
    check_same,
    member_uuid,
    referral_code_for,
)
from domain.members.followups import Followup, FollowupStart, member_of
from domain.members.member import check_enrolment
from domain.members.personal import (
    Erasure,
    NoSealer,
    OpenedPersonalData,
    Sealer,
    normalise_email,
)
from domain.money import check_amount
from domain.plans import PLANS_ID, FollowupPlans, Plan, PlanVersion
from domain.program import PROGRAM_ID, Program, ProgramRules, ProgramVersion
from domain.referrals import normalise_code
from domain.repository import LedgerRepository
from domain.writes import Command, Creation, MemberWrites, Written

FUTURE_TOLERANCE = timedelta(minutes=5)
BACKFILL_LIMIT = timedelta(days=730)


log = logging.getLogger(__name__)


class Ledger(Application[UUID]):
    name = "Daifuku"
    is_snapshotting_enabled = True
    program_refresh_seconds = 1.0

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        snapshot_interval: int = 100,
        sealer: Sealer | None = None,
    ) -> None:
        super().__init__(dict(env or {}))
        self.clock: Clock = clock or SystemClock()
        # Seals members' personal data (adapters/vault.py); a ledger without one reads and
        # replays but cannot enrol.
        self.sealer: Sealer = sealer or NoSealer()
        # Snapshots keep a member with a long history as cheap to load as a new one.
        self.snapshot_interval = snapshot_interval
        self.writes = MemberWrites(self, self.clock)
        self._terms: Terms | None = None
        self._terms_checked = 0.0
        self.due = DueIndex(self)
        self._ensure_program()

    def close(self) -> None:
        super().close()
        close = getattr(self.sealer, "close", None)
        if close is not None:
            close()

    # Persistence hooks of the library.

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcodings.register(transcoder)

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository (same settings), with the projector of
        ``domain/repository.py``."""
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return LedgerRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")
            ),
            deepcopy_from_cache=strtobool(self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")),
        )

    def construct_snapshot_store(self) -> EventStore[UUID]:
        return snapshots.CurrentSnapshots(
            mapper=self.mapper, recorder=self.factory.aggregate_recorder(purpose="snapshots")
        )

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        aggregates = [obj for obj in objs if isinstance(obj, Aggregate)]
        if len(aggregates) == len(objs) and not kwargs:
            recordings = self._save_aggregates(aggregates)
        else:
            recordings = super().save(*objs, **kwargs)
        if self.snapshots is not None:
            saved = [recording.domain_event for recording in recordings]
            taken = snapshots.due_snapshots(aggregates, saved, self.snapshot_interval)
            if taken:
                self.snapshots.put(taken)
        if self.due.following and self._terms is not None:
            self._note_due(aggregates, self._terms)
        return recordings

    def _note_due(self, aggregates: list[Aggregate], terms: Terms) -> None:
        """Tell this process's scheduler the saved members' next due times, so that it need
        not load them again. After the commit: a failure here only leaves the scan to find
        them, it never fails the write."""
        members = [a for a in aggregates if isinstance(a, Member)]
        if members:
            try:
                self.due.noted(members, terms)
            except Exception:
                log.exception("due times of a write not noted; the scheduler's scan finds them")

    def existing(self, ids: list[UUID]) -> set[UUID]:
        """Which of these aggregates have been recorded: one query where the recorder has a
        probe for it (``adapters/recorders.py``), else one each."""
        probe = getattr(self.recorder, "existing_ids", None)
        if probe is not None:
            found: set[UUID] = probe(ids)
            return found
        return {uid for uid in ids if self.recorder.select_events(uid, limit=1)}

    def _save_aggregates(self, aggregates: list[Aggregate]) -> list[Recording[UUID]]:
        """``Application.save`` for aggregates only, as the library does it, without its two
        isinstance checks against runtime protocols per object (about 20 us each in Python
        3.11: a tenth of an import batch's time)."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # deprecated in the library, called as it does
        return recordings

    # The program.

    def _ensure_program(self) -> None:
        try:
            self.repository.get(PROGRAM_ID)
        except AggregateNotFoundError:
            program = Program.start(
                ProgramRules(),
                cause=Cause("bootstrap", Actor.system("bootstrap")),
                at=self.clock.now(),
            )
            with contextlib.suppress(IntegrityError):  # another process started it first
                self.save(program)
        try:
            self.repository.get(PLANS_ID)
        except AggregateNotFoundError:
            plans = FollowupPlans.start(
                cause=Cause("bootstrap", Actor.system("bootstrap")), at=self.clock.now()
            )
            with contextlib.suppress(IntegrityError):
                self.save(plans)

    def terms(self) -> Terms:
        """The program version in force; another process's publication is seen within a second."""
        cached = self._terms
        checked = time.monotonic()
        if cached is not None and checked - self._terms_checked < self.program_refresh_seconds:
            return cached
        program: Program = self.repository.get(PROGRAM_ID, deepcopy_from_cache=False)
        version = len(program.versions)
        if cached is None or cached.version != version:
            cached = Terms(version, program.current().rules)
            self._terms = cached
        self._terms_checked = checked
        return cached

    def program(self) -> ProgramVersion:
        program: Program = self.repository.get(PROGRAM_ID, deepcopy_from_cache=False)
        return program.current()

    def program_at(self, moment: datetime) -> Terms:
        program: Program = self.repository.get(PROGRAM_ID, deepcopy_from_cache=False)
        version = 1
        for entry in program.versions:
            if entry["published_at"] <= moment:
                version = entry["version"]
        return Terms(version, program.at_version(version).rules)

    def publish_program(self, rules: ProgramRules, cause: Cause | str) -> ProgramVersion:
        caused = Cause.of(cause)
        for _ in range(self.writes.max_attempts):
            program: Program = self.repository.get(PROGRAM_ID)
            published = program.publish(rules, caused, self.clock.now())
            try:
                self.save(program)
            except IntegrityError:
                continue
            self._terms = None
            return published
        raise Conflict("the program is being changed by someone else; try again")

    # Follow-up plans.

    def followup_plans(self) -> FollowupPlans:
        plans: FollowupPlans = self.repository.get(PLANS_ID, deepcopy_from_cache=False)
        return plans

    def followup_plan(self, name: str) -> list[PlanVersion]:
        """Every version of the plan ``name``, oldest first (the last is in force)."""
        history = self.followup_plans().history(name)
        if not history:
            raise UnknownPlan(name)
        return history

    def publish_plan(self, name: str, plan: Plan, cause: Cause | str) -> tuple[PlanVersion, bool]:
        """A new version of the plan ``name`` (False: the same as the one in force, nothing
        published)."""
        caused = Cause.of(cause)
        for _ in range(self.writes.max_attempts):
            plans: FollowupPlans = self.repository.get(PLANS_ID)
            published = plans.publish(name, plan, caused, self.clock.now())
            try:
                self.save(plans)
            except IntegrityError:
                continue
            return published
        raise Conflict("the follow-up plans are being changed by someone else; try again")

    # Follow-ups.

    def start_followup(self, member_id: str, start: FollowupStart, cause: Cause) -> Written[bool]:
        """Start a follow-up the process decided on; a second start of the same one records
        nothing."""
        terms = self.terms()

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[bool, bool]:
            started = member.start_followup(start, terms, now, cause)
            return started, started

        return self.writes.change(member_id, command)

    def start_followups(self, starts: list[tuple[str, FollowupStart, Cause]]) -> int:
        """Start several follow-ups the process decided on in one transaction: one lock of the
        event store and one commit for them all, which is what keeps the process up with a
        busy log. If another process changed one of the members meanwhile, each is started on
        its own instead. How many started (a second start of one records nothing)."""
        terms = self.terms()
        writes = self.writes
        uids = [member_uuid(member_id) for member_id, _, _ in starts]
        with writes.locks(uids):
            now = self.clock.now()
            members: dict[str, Member] = {}
            started = 0
            try:
                for member_id, start, cause in starts:
                    member = members.get(member_id)
                    if member is None:
                        member = writes.member(member_uuid(member_id), member_id)
                        members[member_id] = member
                    started += member.start_followup(start, terms, now, cause)
                changed = [m for m in members.values() if m.pending_events]
                if changed:
                    writes.save(*changed)
                return started
            except IntegrityError:
                writes.evict(*uids)
            except BaseException:
                writes.evict(*uids)
                raise
        return sum(self.start_followup(*start).value for start in starts)

    def report_followup_outcome(
        self,
        followup: str,
        step: int,
        outcome: str,
        detail: str | None,
        cause: Cause | str,
    ) -> Written[Followup]:
        """Record what the shop reports became of a due step; the follow-up after (a copy,
        taken under the member's lock)."""
        caused = Cause.of(cause)
        member_id = member_of(followup)
        if member_id is None:
            raise UnknownFollowup(followup)
        terms = self.terms()

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[Followup, bool]:
            done = member.report_followup_outcome(
                followup, step, outcome, detail, terms, now, caused
            )
            return copy.deepcopy(member.followups.by_id[followup]), done

        try:
            return self.writes.change(member_id, command)
        except UnknownMember:
            raise UnknownFollowup(followup) from None

    # Members.

    def enrol(
        self,
        member_id: str,
        email: str,
        name: str | None,
        cause: Cause | str,
        referral_code: str | None = None,
        enrolled_at: datetime | None = None,
    ) -> Written[MemberStatus]:
        """Enrol a member, now or at ``enrolled_at`` (a customer the shop has known for years):
        its business time starts there; more than 5 minutes ahead is refused."""
        code = self.referral_code(referral_code)
        referrer_id = None
        if code is not None:
            referrer_id = self.writes.owner(
                "referral-code", code, UnknownReferralCode(str(referral_code))
            )
        decide = self.enrolment_command(
            member_id, email, name, Cause.of(cause), code, referrer_id, enrolled_at
        )
        written = self.writes.create(member_id, decide, partner_id=referrer_id)
        assert written.value is not None
        return Written(written.value, written.created, written.position)

    @staticmethod
    def referral_code(given: str | None) -> str | None:
        """The canonical form of a referral code given at enrolment."""
        if given is None:
            return None
        code = normalise_code(given)
        if code is None:
            raise UnknownReferralCode(given)
        return code

    def enrolment_command(
        self,
        member_id: str,
        email: str,
        name: str | None,
        caused: Cause,
        code: str | None,
        referrer_id: str | None,
        enrolled_at: datetime | None,
        taken_codes: Mapping[str, str] | None = None,
        free_codes: Container[str] = (),
        answer: bool = True,
    ) -> Creation[MemberStatus | None]:
        """The enrolment, checked, as a creation of the member (with its referrer, who owns
        ``code``). An import's batch passes the referral codes it has given out but not saved
        yet (``taken_codes``) and those it found free in the store (``free_codes``), and
        needs no status in answer (``answer``: the creation answers None)."""
        terms = self.terms()
        if enrolled_at is not None and enrolled_at > self.clock.now() + FUTURE_TOLERANCE:
            raise EnrolledAtOutOfRange(
                "must not be more than 5 minutes in the future", "enrolled_at"
            )
        if referrer_id is not None and referrer_id == member_id:
            raise SelfReferral()
        check_enrolment(member_id, email, name)

        def decide(
            existing: Member | None, now: datetime, referrer: Member | None
        ) -> tuple[MemberStatus | None, list[Aggregate]]:
            if existing is not None:
                self._check_same_enrolment(existing, email, name, code)
                if enrolled_at is not None and enrolled_at != existing.enrolled_at:
                    raise Conflict(
                        f"member {member_id!r} is already enrolled with a different enrolled_at",
                        "enrolled_at",
                    )
                return (existing.status(now, terms) if answer else None), []
            if referrer is not None and self._same_person(referrer, email):
                raise SelfReferral()
            member = Member.enrol(
                member_id,
                email,
                name,
                self.sealer,
                terms,
                now if enrolled_at is None else enrolled_at,
                caused,
                self._free_code(member_id, taken_codes or {}, free_codes),
                recorded_at=now,
            )
            changed: list[Aggregate] = [
                member,
                Ownership.record("referral-code", member.referral_code, member_id, now, caused),
            ]
            if referrer is not None and code is not None:
                referrals.register(referrer, member, code, terms, now, caused)
                changed.append(referrer)
            return (member.status(now, terms) if answer else None), changed

        return decide

    def _same_person(self, referrer: Member, email: str) -> bool:
        """Whether ``email`` is the referrer's own, compared by the keyed digest (an erased
        referrer matches nobody)."""
        held = referrer.personal
        normalised = normalise_email(email)
        if held.legacy_email is not None:
            return normalise_email(held.legacy_email) == normalised
        if held.email_digest is None:
            return False
        return self.sealer.digest(referrer.member_id, normalised) == held.email_digest

    def _check_same_enrolment(
        self, existing: Member, email: str, name: str | None, code: str | None
    ) -> None:
        """Enrolling again is a no-op with the same data and a conflict with other data (an
        erased member's data matches nothing)."""
        referred = existing.referral.code if existing.referral else None
        held = self.personal_data(existing)
        if held.erased:
            raise Conflict(
                f"member {existing.member_id!r} was erased: with its personal data gone, its id "
                "cannot be enrolled again",
                "member_id",
            )
        for field, same in (
            ("email", held.email == email),
            ("name", held.name == name),
            ("referral_code", code is None or code == referred),
        ):
            if not same:
                raise Conflict(
                    f"member {existing.member_id!r} is already enrolled with a different {field}",
                    field,
                )

    # Personal data.

    def personal_data(self, member: Member | MemberStatus) -> OpenedPersonalData:
        """The member's email and name opened with its key; None for both once erased."""
        held = member.personal
        member_id = member.member_id
        if held.erased:
            return OpenedPersonalData(None, None, erased=True)
        if held.legacy_email is not None:
            return OpenedPersonalData(held.legacy_email, held.legacy_name, erased=False)
        if held.sealed_email is None:
            return OpenedPersonalData(None, None, erased=True)
        email = self.sealer.open(member_id, "email", held.sealed_email)
        if email is None:  # the key is gone: erased, and the event is on its way
            return OpenedPersonalData(None, None, erased=True)
        name = (
            None
            if held.sealed_name is None
            else self.sealer.open(member_id, "name", held.sealed_name)
        )
        return OpenedPersonalData(email, name, erased=False)

    def erase_personal_data(self, member_id: str, cause: Cause | str) -> Written[Erasure]:
        """Destroy the member's data key, then record that it was: the sealed email and name in
        the ledger can no longer be opened. Erasing again answers the first erasure."""
        caused = Cause.of(cause)
        terms = self.terms()
        uid = member_uuid(member_id)
        with self.writes.lock(uid):
            self.writes.member(uid, member_id)  # 404 for an unknown member
        self.sealer.erase(member_id)

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[bool, bool]:
            if member.personal.erased:
                return False, False
            member.erase_personal_data(now, terms, caused)
            return True, True

        written = self.writes.change(member_id, command)
        return Written(self._erasure(member_id), written.created, written.position)

    def _erasure(self, member_id: str) -> Erasure:
        for event in self.events.get(member_uuid(member_id), desc=True):
            if isinstance(event, Member.PersonalDataErased):
                return Erasure(member_id, event.erased, event.timestamp, event.actor)
        raise UnknownMember(member_id)

    def seal_legacy_personal_data(self, cause: Cause | str) -> list[str]:
        """Seal the email and name of every member an older version enrolled in plain text (a
        run after a crash finds them sealed already); the members whose first event still
        holds them, for the caller to remove them there."""
        caused = Cause.of(cause)
        terms = self.terms()
        found = list(eventlog.legacy_enrolments(self))
        for member_id in found:

            def command(member: Member, now: datetime, partner: Member | None) -> tuple[bool, bool]:
                done = member.seal_legacy(self.sealer, now, terms, caused)
                return done, done

            self.writes.change(member_id, command)
        return found

    def _free_code(
        self, member_id: str, taken: Mapping[str, str], free: Container[str] = ()
    ) -> str:
        """The member's own referral code: derived from its id, or the next if that is taken
        (in the store, or in ``taken``: given out in the same transaction)."""
        for attempt in range(100):
            code = referral_code_for(member_id, attempt)
            if taken.get(code, member_id) != member_id:
                continue
            if code in free:
                return code
            try:
                owner = self.writes.owner("referral-code", code, LookupError())
            except LookupError:
                return code
            if owner == member_id:
                return code
        raise Conflict("no free referral code could be found; try again")

    def referrals(self, member_id: str, after: int = 0, limit: int = 100) -> list[MadeReferral]:
        """The referrals a member made, in the order the friends enrolled (copies)."""
        uid = member_uuid(member_id)
        terms = self.terms()
        with self.writes.lock(uid):
            # As of now, like the status: a reward whose window has passed reads as rewarded
            # whether or not the scheduler has run since.
            member = self.writes.member(uid, member_id).projected(self.clock.now(), terms)
            chosen = member.referral_order[after : after + limit]
            return [copy.deepcopy(member.referrals[r]) for r in chosen]

    def member_followups(self, member_id: str) -> list[Followup]:
        """The member's follow-ups, newest first (copies)."""
        uid = member_uuid(member_id)
        terms = self.terms()
        with self.writes.lock(uid):
            # As of now, like the status: a step due by now reads as recorded whether or not
            # the scheduler has run since.
            member = self.writes.member(uid, member_id).projected(
                self.clock.now(), terms, notices=True
            )
            return [copy.deepcopy(f) for f in reversed(member.followups.by_id.values())]

    def member_status(self, member_id: str, as_of: datetime | None = None) -> MemberStatus:
        uid = member_uuid(member_id)
        if as_of is None:
            terms = self.terms()
            with self.writes.lock(uid):
                return self.writes.member(uid, member_id).status(self.clock.now(), terms)
        past = self.member_at(member_id, as_of).status(as_of, self.program_at(as_of))
        # Personal data is not history: every status shows what is held now (nothing, once
        # erased; sealed, for a member whose older events held it in plain text).
        with self.writes.lock(uid):
            held = self.writes.member(uid, member_id).personal
        return dataclasses.replace(past, personal=held)

    def member_events(
        self, member_id: str, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        uid = member_uuid(member_id)
        gt = min(after, eventlog.MAX_POSITION) or None
        events = list(self.events.get(uid, gt=gt, limit=limit))
        if not events and after == 0:
            raise UnknownMember(member_id)
        if not events:
            self.writes.member(uid, member_id)  # 404 for an unknown member, empty page otherwise
        return [eventlog.describe_event(event) for event in events]

    def event_log(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The whole ledger in the order it was recorded, each event with its position."""
        return eventlog.page(self, after, limit)

    # Analytics, folded from the ledger (domain/reports.py).

    def analytics_summary(self, as_of: datetime | None = None) -> dict[str, Any]:
        return reports.summary(self, as_of)

    def customer_value(
        self,
        as_of: datetime | None = None,
        value_class: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        return reports.customer_value(self, as_of, value_class, after, limit)

    def member_at(self, member_id: str, as_of: datetime) -> Member:
        """The member as its events recorded by ``as_of`` left it."""
        uid = member_uuid(member_id)
        version = None
        event: Any
        for event in self.events.get(uid):
            if event.timestamp > as_of:
                break
            version = event.originator_version
        if version is None:
            raise UnknownMember(member_id)
        member: Member = self.repository.get(uid, version=version)
        return member

    def member_copy(self, member_id: str) -> Member:
        """A copy of the member as it is now, taken under its lock."""
        uid = member_uuid(member_id)
        with self.writes.lock(uid):
            return copy.deepcopy(self.writes.member(uid, member_id))

    # Purchases and refunds.

    def record_purchase(
        self,
        order_id: str,
        member_id: str,
        amount: Decimal,
        currency: str,
        occurred_at: datetime | None,
        items: list[LineItem] | None,
        guarantee: str | None,
        cause: Cause | str,
    ) -> Written[Purchase]:
        command = self.purchase_command(
            order_id, amount, currency, occurred_at, items, guarantee, Cause.of(cause)
        )
        return self.writes.change(
            member_id,
            command,
            new_owner=("order", order_id),
            partner_of=referrals.open_referrer,
        )

    def purchase_command(
        self,
        order_id: str,
        amount: Decimal,
        currency: str,
        occurred_at: datetime | None,
        items: list[LineItem] | None,
        guarantee: str | None,
        caused: Cause,
        imported: bool = False,
    ) -> Command[Purchase]:
        """The purchase, checked, as a command on its member (and its open referrer). An
        imported one takes effect at its own time (history replayed as it happened) and has no
        age limit."""
        terms = self.terms()
        rules = terms.rules
        if currency != rules.currency:
            raise WrongCurrency(f"the program runs in {rules.currency}, not {currency}", "currency")
        amount = check_amount(amount, currency)
        policy = None
        if guarantee is not None:
            policy = rules.guarantee(guarantee)
            if policy is None:
                raise UnknownGuarantee(f"no guarantee policy named {guarantee!r}", "guarantee")
        requested: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "items": [item.to_dict() for item in items or []],
            "guarantee": guarantee,
        }
        if occurred_at is not None:
            requested["occurred_at"] = occurred_at

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[Purchase, bool]:
            if order_id in member.purchases:
                existing = member.purchases[order_id]
                check_same(existing.as_requested(), requested, f"order {order_id!r}")
                return existing, False
            when = now if occurred_at is None else occurred_at
            if when > now + FUTURE_TOLERANCE:
                raise OccurredAtOutOfRange(
                    "must not be more than 5 minutes in the future", "occurred_at"
                )
            if when < now - BACKFILL_LIMIT and not imported:
                raise OccurredAtOutOfRange(
                    "must not be more than 2 years in the past", "occurred_at"
                )
            member.record_purchase(
                order_id,
                amount,
                currency,
                when,
                items or [],
                policy,
                terms,
                now,
                caused,
                until=when if imported else None,
            )
            if partner is not None:
                referrals.after_purchase(member, partner, order_id, terms, now, caused)
            return member.purchases[order_id], True

        return command

    def purchase(self, order_id: str) -> Purchase:
        member_id = self.writes.owner("order", order_id, UnknownOrder(order_id))
        uid = member_uuid(member_id)
        with self.writes.lock(uid):
            return self.writes.member(uid, member_id).purchases[order_id]

    def refund(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None,
        reason: str | None,
        cause: Cause | str,
    ) -> Written[Purchase]:
        """The purchase as the refund ``refund_id`` left it."""
        member_id = self.writes.owner("order", order_id, UnknownOrder(order_id))
        command = self.refund_command(order_id, refund_id, amount, reason, Cause.of(cause))
        return self.writes.change(member_id, command, partner_of=referrals.open_referrer)

    def refund_command(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None,
        reason: str | None,
        caused: Cause,
        occurred_at: datetime | None = None,
    ) -> Command[Purchase]:
        """The refund as a command on the order's member; at ``occurred_at`` (an imported
        refund) or now."""
        terms = self.terms()
        if amount is not None:
            amount = check_amount(amount, terms.rules.currency)

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[Purchase, bool]:
            existing = member.purchases[order_id].refunds.get(refund_id)
            if existing is not None:
                check_same(
                    {"amount": existing.requested_amount, "reason": existing.reason},
                    {"amount": amount, "reason": reason},
                    f"refund {refund_id!r}",
                )
                return member.purchases[order_id], False
            when = now if occurred_at is None else occurred_at
            if when > now + FUTURE_TOLERANCE:
                raise OccurredAtOutOfRange(
                    "must not be more than 5 minutes in the future", "occurred_at"
                )
            member.refund(order_id, refund_id, amount, reason, when, terms, now, caused)
            if partner is not None:
                referrals.after_refund(member, partner, order_id, refund_id, terms, now, caused)
            return member.purchases[order_id], True

        return command

    def claim_guarantee(
        self, order_id: str, claim_id: str, evidence: str | None, cause: Cause | str
    ) -> Written[Purchase]:
        """The purchase with its claim."""
        caused = Cause.of(cause)
        member_id = self.writes.owner("order", order_id, UnknownOrder(order_id))
        terms = self.terms()

        def command(member: Member, now: datetime, partner: Member | None) -> tuple[Purchase, bool]:
            claim = member.purchases[order_id].claim
            if claim is not None and claim.claim_id == claim_id:
                check_same(
                    {"evidence": claim.evidence}, {"evidence": evidence}, f"claim {claim_id!r}"
                )
                return member.purchases[order_id], False
            refund_id = member.claim_guarantee(order_id, claim_id, evidence, terms, now, caused)
            if partner is not None:
                referrals.after_refund(member, partner, order_id, refund_id, terms, now, caused)
            return member.purchases[order_id], True

        return self.writes.change(member_id, command, partner_of=referrals.open_referrer)

    # Redemptions.

    def redeem(
        self,
        member_id: str,
        redemption_id: str,
        reward: str | None,
        points: int | None,
        cause: Cause | str,
    ) -> Written[Redemption]:
        return self.writes.change(
            member_id,
            self.redemption_command(redemption_id, reward, points, Cause.of(cause)),
            new_owner=("redemption", redemption_id),
        )

    def redemption_command(
        self,
        redemption_id: str,
        reward: str | None,
        points: int | None,
        caused: Cause,
        occurred_at: datetime | None = None,
    ) -> Command[Redemption]:
        """The redemption as a command on its member; at ``occurred_at`` (an imported
        redemption) or now."""
        terms = self.terms()
        requested = {"reward": reward, "requested_points": points}

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[Redemption, bool]:
            existing = member.redemptions.get(redemption_id)
            if existing is not None:
                check_same(
                    {"reward": existing.reward, "requested_points": existing.requested_points},
                    requested,
                    f"redemption {redemption_id!r}",
                )
                return existing, False
            if occurred_at is not None and occurred_at > now + FUTURE_TOLERANCE:
                raise OccurredAtOutOfRange(
                    "must not be more than 5 minutes in the future", "occurred_at"
                )
            member.redeem(redemption_id, reward, points, terms, now, caused, occurred_at)
            return member.redemptions[redemption_id], True

        return command

    def cancel_redemption(self, redemption_id: str, cause: Cause | str) -> Written[Redemption]:
        caused = Cause.of(cause)
        member_id = self.writes.owner("redemption", redemption_id, UnknownRedemption(redemption_id))
        terms = self.terms()

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[Redemption, bool]:
            if member.redemptions[redemption_id].cancelled_at is not None:
                return member.redemptions[redemption_id], False
            member.cancel_redemption(redemption_id, terms, now, caused)
            return member.redemptions[redemption_id], True

        return self.writes.change(member_id, command)

    # The scheduler.

    def record_due(self, now: datetime | None = None, cause: Cause | str | None = None) -> int:
        """Record every time-driven change due by ``now``; a second run records nothing twice."""
        if isinstance(cause, str):
            cause = Cause(cause, SCHEDULER)
        return self.due.record(now or self.clock.now(), cause)
