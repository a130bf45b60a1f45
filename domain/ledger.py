"""The Ledger application: the use cases of the loyalty program over the event store."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import IntegrityError

from domain import analytics, referrals, value
from domain.clock import Clock, SystemClock
from domain.errors import (
    Conflict,
    DomainError,
    OccurredAtOutOfRange,
    UnknownGuarantee,
    UnknownMember,
    UnknownOrder,
    UnknownRedemption,
    WrongCurrency,
)
from domain.members import (
    LineItem,
    Member,
    Ownership,
    Terms,
    check_same,
    member_uuid,
    referral_code_for,
)
from domain.money import check_amount, format_money
from domain.program import PROGRAM_ID, Program, ProgramRules, ProgramVersion
from domain.referrals import SelfReferral, UnknownReferralCode, normalise_code

FUTURE_TOLERANCE = timedelta(minutes=5)
BACKFILL_LIMIT = timedelta(days=730)
MEMBER_TOPIC = f"{Member.__module__}:{Member.__qualname__}."
T = TypeVar("T")


class Ledger(Application[UUID]):
    """One command gets a member, changes it and saves it; a query returns plain values."""

    name = "Daifuku"
    is_snapshotting_enabled = True
    lock_stripes = 256
    max_attempts = 20
    program_refresh_seconds = 1.0

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        snapshot_interval: int = 100,
    ) -> None:
        super().__init__(dict(env or {}))
        self.clock: Clock = clock or SystemClock()
        # Snapshots keep a member with a long history as cheap to load as a new one.
        self.snapshot_interval = snapshot_interval
        self._locks_by_stripe = [threading.Lock() for _ in range(self.lock_stripes)]
        self._written = threading.local()  # per thread: the position of its last write
        self._terms: Terms | None = None
        self._terms_checked = 0.0
        self._due: dict[UUID, datetime] = {}
        self._scanned_to = 0
        self._scheduler_lock = threading.Lock()
        self._ensure_program()

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot a member from the state in hand rather than by replaying it, and less often
        as its history grows, so that snapshots cost the same per event for any history."""
        if self.snapshots is None:
            return
        for aggregate in processing_event.aggregates.values():
            if not isinstance(aggregate, Member):
                continue
            saved = sum(1 for e in processing_event.events if e.originator_id == aggregate.id)
            checkpoint = last_checkpoint(aggregate.version, self.snapshot_interval)
            if checkpoint > aggregate.version - saved:
                self.snapshots.put([Snapshot.take(aggregate)])

    # The program.

    def _ensure_program(self) -> None:
        try:
            self.repository.get(PROGRAM_ID)
        except AggregateNotFoundError:
            program = Program.start(ProgramRules(), cause="bootstrap", at=self.clock.now())
            with contextlib.suppress(IntegrityError):  # another process started it first
                self.save(program)

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

    def publish_program(self, rules: ProgramRules, cause: str) -> ProgramVersion:
        for _ in range(self.max_attempts):
            program: Program = self.repository.get(PROGRAM_ID)
            published = program.publish(rules, cause, self.clock.now())
            try:
                self.save(program)
            except IntegrityError:
                continue
            self._terms = None
            return published
        raise Conflict("the program is being changed by someone else; try again")

    # Members.

    def enrol(
        self,
        member_id: str,
        email: str,
        name: str | None,
        cause: str,
        referral_code: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        terms = self.terms()
        uid = member_uuid(member_id)
        code = referrer_id = None
        if referral_code is not None:
            code = normalise_code(referral_code)
            if code is None:
                raise UnknownReferralCode(referral_code)
            referrer_id = self._owner("referral-code", code, UnknownReferralCode(referral_code))
            if referrer_id == member_id:
                raise SelfReferral()
        for attempt in range(self.max_attempts):
            now = self.clock.now()
            uids = [uid] if referrer_id is None else [uid, member_uuid(referrer_id)]
            with self._locks(uids):
                try:
                    existing = self._member(uid, member_id)
                except UnknownMember:
                    pass
                else:
                    self._check_same_enrolment(existing, email, name, code)
                    return existing.status(now, terms), False
                member = Member.enrol(
                    member_id, email, name, terms, now, cause, self._free_code(member_id)
                )
                changed: list[Aggregate] = [
                    member,
                    Ownership.record("referral-code", member.referral_code, member_id, now),
                ]
                if referrer_id is not None and code is not None:
                    referrer = self._member(uids[1], referrer_id)
                    try:
                        referrals.register(referrer, member, code, terms, now, cause)
                    except BaseException:
                        self._evict(uids[1])
                        raise
                    changed.append(referrer)
                try:
                    self.save(*changed)
                except IntegrityError:
                    self._evict(*uids)
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                except BaseException:
                    self._evict(*uids)  # the cached referrer holds events that were not saved
                    raise
                return member.status(now, terms), True
        raise Conflict(f"member {member_id!r} is being enrolled concurrently; try again")

    @staticmethod
    def _check_same_enrolment(
        existing: Member, email: str, name: str | None, code: str | None
    ) -> None:
        """Enrolling again is a no-op with the same data and a conflict with other data."""
        referred = existing.referral["code"] if existing.referral else None
        for field, same in (
            ("email", existing.email == email),
            ("name", existing.name == name),
            ("referral_code", code is None or code == referred),
        ):
            if not same:
                raise Conflict(
                    f"member {existing.member_id!r} is already enrolled with a different {field}",
                    field,
                )

    def _free_code(self, member_id: str) -> str:
        """The member's own referral code: derived from its id, or the next if that is taken."""
        for attempt in range(100):
            code = referral_code_for(member_id, attempt)
            try:
                owner = self._owner("referral-code", code, LookupError())
            except LookupError:
                return code
            if owner == member_id:
                return code
        raise Conflict("no free referral code could be found; try again")

    def referrals(self, member_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The referrals a member made, in the order the friends enrolled."""
        uid = member_uuid(member_id)
        terms = self.terms()
        with self._lock(uid):
            # As of now, like the status: a reward whose window has passed reads as rewarded
            # whether or not the scheduler has run since.
            member = self._member(uid, member_id).projected(self.clock.now(), terms)
            chosen = member.referral_order[after : after + limit]
            return [
                {**referrals.referral_view(member.referrals[r], member_id), "seq": i}
                for i, r in enumerate(chosen, start=after + 1)
            ]

    def last_position(self) -> int | None:
        """Where this thread's last command recorded its last event (None before any): a read
        model that has applied this position includes that command's effect."""
        position: int | None = getattr(self._written, "position", None)
        return position

    def member_status(self, member_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        uid = member_uuid(member_id)
        if as_of is None:
            terms = self.terms()
            with self._lock(uid):
                return self._member(uid, member_id).status(self.clock.now(), terms)
        version = None
        event: Any
        for event in self.events.get(uid):
            if event.timestamp > as_of:
                break
            version = event.originator_version
        if version is None:
            raise UnknownMember(member_id)
        member: Member = self.repository.get(uid, version=version)
        return member.status(as_of, self.program_at(as_of))

    def member_events(
        self, member_id: str, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        uid = member_uuid(member_id)
        events = list(self.events.get(uid, gt=after or None, limit=limit))
        if not events and after == 0:
            raise UnknownMember(member_id)
        if not events:
            self._member(uid, member_id)  # 404 for an unknown member, empty page otherwise
        return [describe_event(event) for event in events]

    def event_log(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The whole ledger in the order it was recorded, each event with its position."""
        page = []
        for notification in self.recorder.select_notifications(start=after + 1, limit=limit):
            event = self.mapper.to_domain_event(notification)
            described = describe_event(event)
            page.append(
                {
                    "position": notification.id,
                    "type": described["type"],
                    "aggregate": type(event).__qualname__.split(".")[0],
                    "member_id": getattr(event, "member_id", None),
                    "recorded_at": described["recorded_at"],
                    "occurred_at": described["occurred_at"],
                    "data": described["data"],
                }
            )
        return page

    def _events_of_types(self, *names: str) -> Iterator[Any]:
        """Member events of these types, in recorded order, read a page at a time."""
        topics = [f"{MEMBER_TOPIC}{name}" for name in names]
        start = 1
        while True:
            page = self.recorder.select_notifications(start=start, limit=1000, topics=topics)
            if not page:
                return
            for notification in page:
                yield self.mapper.to_domain_event(notification)
            start = page[-1].id + 1

    def analytics_summary(self, as_of: datetime | None = None) -> dict[str, Any]:
        """Members by tier and stage, points outstanding, guarantee liability and the referral
        funnel, folded from the events themselves (domain/analytics.py has the figures)."""
        moment = as_of or self.clock.now()
        rules = (self.terms() if as_of is None else self.program_at(moment)).rules
        promises: dict[str, dict[str, Any]] = {}
        members: list[str] = []
        funnel = dict.fromkeys(analytics.FUNNEL, 0)
        steps = {f"Referral{step.capitalize()}": step for step in analytics.FUNNEL}
        for event in self._events_of_types(
            "Enrolled", "PurchaseRecorded", "PurchaseRefunded", "GuaranteeClaimed", *steps
        ):
            # Not break: writers in other processes may commit in another order than their times.
            if event.timestamp > moment:
                continue
            name = type(event).__name__
            if name == "Enrolled":
                members.append(event.member_id)
            elif name in steps:
                funnel[steps[name]] += 1
            elif name == "PurchaseRecorded" and event.guarantee is not None:
                promises[event.order_id] = {
                    "policy": event.guarantee["policy"],
                    "refund_percent": event.guarantee["refund_percent"],
                    "expires_at": event.guarantee["expires_at"],
                    "amount": event.amount,
                    "refunded": Decimal(0),
                    "payout": None,
                }
            elif event.order_id in promises:
                promise = promises[event.order_id]
                if name == "PurchaseRefunded":
                    promise["refunded"] += event.amount
                else:
                    promise["payout"] = event.payout
        statuses = (self.member_status(member_id, as_of) for member_id in members)
        return analytics.summary(
            moment,
            rules,
            statuses,
            (analytics.Promise(**promise) for promise in promises.values()),
            funnel,
        )

    def customer_value(
        self,
        as_of: datetime | None = None,
        value_class: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Per member: net contribution, value class, RFM and lifecycle stage (domain/value.py).

        Classes, scores and the Pareto share rank every member with purchases as of the instant;
        ``value_class`` then keeps one class, and ``after``/``limit`` page through the rest.
        """
        moment = as_of or self.clock.now()
        rules = self.program_at(moment).rules
        return value.report(
            list(self.value_facts_at(moment).values()),
            moment,
            rules,
            lambda member_id: str(self.member_status(member_id, as_of)["stage"]),
            value_class,
            after,
            limit,
        )

    def value_facts_at(self, moment: datetime) -> dict[str, value.MemberFacts]:
        """Every member's customer-value facts as of ``moment``, folded from the events."""
        facts: dict[str, value.MemberFacts] = {}
        redemptions: dict[str, tuple[str, int]] = {}
        for event in self._events_of_types(
            "Enrolled",
            "PurchaseRecorded",
            "PurchaseRefunded",
            "GuaranteeClaimed",
            "PointsRedeemed",
            "RedemptionCancelled",
        ):
            # Not break: writers in other processes may commit in another order than their times.
            if event.timestamp > moment:
                continue
            name = type(event).__name__
            if name == "Enrolled":
                facts[event.member_id] = value.MemberFacts(event.member_id, event.at)
                continue
            member = facts.get(event.member_id)
            if member is None:
                continue
            if name == "PurchaseRecorded":
                member.add_purchase(event.occurred_at, event.amount)
            elif name == "PurchaseRefunded":
                member.refunds += event.amount
            elif name == "GuaranteeClaimed":
                # The claim's own refund is part of what its payout hands back.
                member.refunds -= event.unrefunded
                member.guarantee_payouts += event.payout
            elif name == "PointsRedeemed":
                member.points_redeemed += event.points
                redemptions[event.redemption_id] = (event.member_id, event.points)
            elif event.redemption_id in redemptions:
                member.points_redeemed -= redemptions.pop(event.redemption_id)[1]
        return facts

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
        cause: str,
    ) -> tuple[dict[str, Any], bool]:
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
        requested = {
            "amount": amount,
            "currency": currency,
            "items": [item.to_dict() for item in items or []],
            "guarantee": guarantee,
        }
        if occurred_at is not None:
            requested["occurred_at"] = occurred_at

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[dict[str, Any], bool]:
            if order_id in member.purchases:
                purchase = member.purchases[order_id]
                check_same(
                    {**purchase, "guarantee": (purchase["guarantee"] or {}).get("policy")},
                    requested,
                    f"order {order_id!r}",
                )
                return member.purchase_response(order_id, rules.currency), False
            when = now if occurred_at is None else occurred_at
            if when > now + FUTURE_TOLERANCE:
                raise OccurredAtOutOfRange(
                    "must not be more than 5 minutes in the future", "occurred_at"
                )
            if when < now - BACKFILL_LIMIT:
                raise OccurredAtOutOfRange(
                    "must not be more than 2 years in the past", "occurred_at"
                )
            member.record_purchase(
                order_id, amount, currency, when, items or [], policy, terms, now, cause
            )
            if partner is not None:
                referrals.after_purchase(member, partner, order_id, terms, now, cause)
            return member.purchase_response(order_id, rules.currency), True

        def conflict() -> None:
            self._check_owner("order", order_id, member_id)

        return self._change_member(
            member_id,
            command,
            new_owner=("order", order_id),
            on_conflict=conflict,
            partner_of=referrals.open_referrer,
        )

    def purchase(self, order_id: str) -> dict[str, Any]:
        member_id = self._owner("order", order_id, UnknownOrder(order_id))
        uid = member_uuid(member_id)
        currency = self.terms().rules.currency
        with self._lock(uid):
            return self._member(uid, member_id).purchase_view(order_id, currency)

    def refund(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None,
        reason: str | None,
        cause: str,
    ) -> tuple[dict[str, Any], bool]:
        member_id = self._owner("order", order_id, UnknownOrder(order_id))
        terms = self.terms()
        currency = terms.rules.currency
        if amount is not None:
            amount = check_amount(amount, currency)

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[dict[str, Any], bool]:
            purchase = member.purchases[order_id]
            existing = purchase["refunds"].get(refund_id)
            if existing is not None:
                check_same(
                    {"amount": existing["requested_amount"], "reason": existing["reason"]},
                    {"amount": amount, "reason": reason},
                    f"refund {refund_id!r}",
                )
                return self._refund_response(member, order_id, refund_id, currency), False
            member.refund(order_id, refund_id, amount, reason, now, terms, now, cause)
            if partner is not None:
                referrals.after_refund(member, partner, order_id, refund_id, terms, now, cause)
            return self._refund_response(member, order_id, refund_id, currency), True

        return self._change_member(member_id, command, partner_of=referrals.open_referrer)

    def claim_guarantee(
        self, order_id: str, claim_id: str, evidence: str | None, cause: str
    ) -> tuple[dict[str, Any], bool]:
        member_id = self._owner("order", order_id, UnknownOrder(order_id))
        terms = self.terms()
        currency = terms.rules.currency

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[dict[str, Any], bool]:
            claim = member.purchases[order_id].get("claim")
            if claim is not None and claim["claim_id"] == claim_id:
                check_same(
                    {"evidence": claim["evidence"]},
                    {"evidence": evidence},
                    f"claim {claim_id!r}",
                )
                return member.claim_view(order_id, currency), False
            refund_id = member.claim_guarantee(order_id, claim_id, evidence, terms, now, cause)
            if partner is not None:
                referrals.after_refund(member, partner, order_id, refund_id, terms, now, cause)
            return member.claim_view(order_id, currency), True

        return self._change_member(member_id, command, partner_of=referrals.open_referrer)

    @staticmethod
    def _refund_response(
        member: Member, order_id: str, refund_id: str, currency: str
    ) -> dict[str, Any]:
        """What the refund left, the same whenever it is asked again."""
        purchase = member.purchases[order_id]
        refund = purchase["refunds"][refund_id]
        left = purchase["amount"] - refund["refunded_total"]
        return {
            **member.refund_view(order_id, refund_id, currency),
            "refunded_total": format_money(refund["refunded_total"], currency),
            "refundable_amount": format_money(left, currency),
            "tier": refund["tier_after"],
            "tier_changed": refund["tier_after"] != refund["tier_before"],
        }

    # Redemptions.

    def redeem(
        self,
        member_id: str,
        redemption_id: str,
        reward: str | None,
        points: int | None,
        cause: str,
    ) -> tuple[dict[str, Any], bool]:
        terms = self.terms()
        requested = {"reward": reward, "requested_points": points}

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[dict[str, Any], bool]:
            existing = member.redemptions.get(redemption_id)
            if existing is not None:
                check_same(
                    {
                        "reward": existing["reward"],
                        "requested_points": None if existing["reward"] else existing["points"],
                    },
                    requested,
                    f"redemption {redemption_id!r}",
                )
                return self._redemption_response(member, redemption_id), False
            member.redeem(redemption_id, reward, points, terms, now, cause)
            return self._redemption_response(member, redemption_id), True

        def conflict() -> None:
            self._check_owner("redemption", redemption_id, member_id)

        return self._change_member(
            member_id, command, new_owner=("redemption", redemption_id), on_conflict=conflict
        )

    def cancel_redemption(self, redemption_id: str, cause: str) -> tuple[dict[str, Any], bool]:
        member_id = self._owner("redemption", redemption_id, UnknownRedemption(redemption_id))
        terms = self.terms()

        def command(
            member: Member, now: datetime, partner: Member | None
        ) -> tuple[dict[str, Any], bool]:
            if member.redemptions[redemption_id]["cancelled_at"] is not None:
                return self._redemption_response(member, redemption_id), False
            member.cancel_redemption(redemption_id, terms, now, cause)
            return self._redemption_response(member, redemption_id), True

        return self._change_member(member_id, command)

    @staticmethod
    def _redemption_response(member: Member, redemption_id: str) -> dict[str, Any]:
        """The balance right after the redemption, or after its cancellation once cancelled."""
        redemption = member.redemptions[redemption_id]
        cancelled = redemption["cancelled_at"] is not None
        return {
            **member.redemption_view(redemption_id),
            "points_available": redemption[
                "available_after_cancel" if cancelled else "available_after"
            ],
        }

    # The scheduler.

    def record_due(self, now: datetime | None = None, cause: str | None = None) -> int:
        """Record every time-driven change due by ``now``; a second run records nothing twice."""
        with self._scheduler_lock:
            moment = now or self.clock.now()
            run = cause or f"scheduler:{moment.isoformat()}"
            self._scan_changed_members()
            recorded = 0
            for uid in [uid for uid, due in self._due.items() if due <= moment]:
                recorded += self._catch_up(uid, moment, run)
            return recorded

    def _scan_changed_members(self) -> None:
        """Re-read the next due time of every member changed since the last scan."""
        while True:
            notifications = self.recorder.select_notifications(
                start=self._scanned_to + 1, limit=1000
            )
            if not notifications:
                return
            changed = {n.originator_id for n in notifications if n.topic.startswith(MEMBER_TOPIC)}
            for uid in changed:
                self._remember_due(UUID(str(uid)))
            self._scanned_to = notifications[-1].id

    def _remember_due(self, uid: UUID) -> None:
        with self._lock(uid):
            member: Member = self.repository.get(uid, deepcopy_from_cache=False)
            due = member.next_due_at()
        if due is None:
            self._due.pop(uid, None)
        else:
            self._due[uid] = due

    def _catch_up(self, uid: UUID, now: datetime, cause: str) -> int:
        terms = self.terms()
        with self._lock(uid):
            member_id = self._member(uid, str(uid)).member_id

        def command(member: Member, _: datetime, __: Member | None) -> tuple[int, bool]:
            return member.record_due(now, terms, cause, self.clock.now()), True

        recorded, _ = self._change_member(member_id, command)
        self._remember_due(uid)
        return recorded

    # Plumbing: locking, retries on concurrent writers, ownership of natural keys.

    def _lock(self, uid: UUID) -> threading.Lock:
        return self._locks_by_stripe[uid.int % self.lock_stripes]

    def _member(self, uid: UUID, member_id: str) -> Member:
        try:
            member: Member = self.repository.get(uid, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            raise UnknownMember(member_id) from None
        return member

    @contextlib.contextmanager
    def _locks(self, uids: list[UUID]) -> Iterator[None]:
        """The stripes of several members, always taken in the same order."""
        stripes = sorted({uid.int % self.lock_stripes for uid in uids})
        with contextlib.ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._locks_by_stripe[stripe])
            yield

    def _evict(self, *uids: UUID) -> None:
        cache = self.repository.cache
        if cache is not None:
            for uid in uids:
                with contextlib.suppress(KeyError):
                    cache.get(uid, evict=True)

    def _change_member(
        self,
        member_id: str,
        command: Callable[[Member, datetime, Member | None], tuple[T, bool]],
        new_owner: tuple[str, str] | None = None,
        on_conflict: Callable[[], None] | None = None,
        partner_of: Callable[[Member], str | None] | None = None,
    ) -> tuple[T, bool]:
        """Run a command on the cached member in place; any failure evicts it from the cache.

        ``partner_of`` names a second member the command may change in the same transaction
        (a referrer). ``last_position`` then tells the calling thread where in the log the
        command's last event was recorded (for a repeat that records nothing, the log's head).
        Two writers of one member in different processes meet as a version conflict in the
        event store; the loser reloads and runs its command again.
        """
        uid = member_uuid(member_id)
        self._written.position = None
        # The cached member is brought up to date first (one indexed read): with several
        # worker processes, saving a stale copy would waste a transaction on a version conflict.
        # Most commands change one member: its lock is taken, it is read once, and the command
        # runs. Only when it names a partner are both locks taken (in order) and both read.
        load = self._member
        for attempt in range(self.max_attempts):
            with self._lock(uid):
                member = load(uid, member_id)
                partner_id = None if partner_of is None else partner_of(member)
                if partner_id is None:
                    done = self._run_command(member, None, command, new_owner, on_conflict)
                    if done is not None:
                        return done
            if partner_id is not None:
                uids = [uid, member_uuid(partner_id)]
                with self._locks(uids):
                    member = load(uid, member_id)
                    if partner_of is not None and partner_of(member) != partner_id:
                        continue  # the partner changed while no lock was held: start again
                    partner = load(uids[1], partner_id)
                    done = self._run_command(member, partner, command, new_owner, on_conflict)
                    if done is not None:
                        return done
            if on_conflict is not None:
                on_conflict()
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise Conflict(f"member {member_id!r} is changing too fast; try again")

    def _run_command(
        self,
        member: Member,
        partner: Member | None,
        command: Callable[[Member, datetime, Member | None], tuple[T, bool]],
        new_owner: tuple[str, str] | None,
        on_conflict: Callable[[], None] | None,
    ) -> tuple[T, bool] | None:
        """Run ``command`` and save what it changed (under the members' locks); None when the
        save met a concurrent writer, so the caller runs it again on fresh copies."""
        uids = [member.id] if partner is None else [member.id, partner.id]
        try:
            result, created = command(member, self.clock.now(), partner)
            changed: list[Aggregate] = [
                m for m in (member, partner) if m is not None and m.pending_events
            ]
            if changed:
                if created and new_owner is not None:
                    changed.append(Ownership.record(*new_owner, member.member_id, self.clock.now()))
                recordings = self.save(*changed)
                position = max(r.notification.id for r in recordings)
            else:
                # Nothing new (a repeat): any position at or after the original's.
                position = self.recorder.max_notification_id() or 0
            self._written.position = position
            return result, created
        except IntegrityError:
            self._evict(*uids)
            return None
        except DomainError:
            self._evict(*uids)
            if on_conflict is not None:
                on_conflict()  # another member's id is a conflict, whatever else fails
            raise
        except BaseException:
            self._evict(*uids)
            raise

    def _owner(self, kind: str, key: str, missing: Exception) -> str:
        try:
            owner: Ownership = self.repository.get(
                Ownership.key_id(kind, key), deepcopy_from_cache=False
            )
        except AggregateNotFoundError:
            raise missing from None
        return owner.member_id

    def _check_owner(self, kind: str, key: str, member_id: str) -> None:
        try:
            owner = self._owner(kind, key, LookupError())
        except LookupError:
            return
        if owner != member_id:
            raise Conflict(f"{kind} {key!r} belongs to another member", "member_id")


def last_checkpoint(version: int, interval: int) -> int:
    """The latest snapshot version at or below ``version``: every ``interval`` events at first,
    then twice as far apart each time the history doubles past eight intervals."""
    step = interval
    while version >= step * 8:
        step *= 2
    return version - version % step


def describe_event(event: Any) -> dict[str, Any]:
    """An event as the API and auditors see it: type, times and its own data."""
    hidden = {"originator_id", "originator_version", "timestamp", "originator_topic"}
    data = {k: to_json(v) for k, v in event.__dict__.items() if k not in hidden}
    occurred = getattr(event, "occurred_at", None) or getattr(event, "at", None)
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "recorded_at": event.timestamp,
        "occurred_at": occurred,
        "data": data,
    }


def to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
