"""The Member aggregate: its events, and the commands that decide them.

Every state change is an event whose ``change`` runs again on every replay, so each command
checks first and triggers afterwards. The bookkeeping lives with its concept: lots in ``lots``,
tier standing in ``tiers``, purchases and refunds in ``purchases``.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import value
from domain.actors import SCHEDULER, Cause
from domain.analytics import Promise
from domain.errors import (
    Conflict,
    EvidenceRequired,
    GuaranteeAlreadyClaimed,
    GuaranteeWindowClosed,
    InsufficientPoints,
    InvalidInput,
    NoGuarantee,
    OverRefund,
    RedemptionAlreadyCancelled,
    UnknownReward,
)
from domain.members import (
    due,
    followups,
    lots,
    personal,
    purchases,
    redemptions,
    referrals,
    status,
    tiers,
)
from domain.members.events import MemberEvent
from domain.members.lots import LotStatus, PointLots
from domain.members.purchases import (
    GuaranteeTerms,
    LineItem,
    Purchase,
    points_for,
)
from domain.members.redemptions import Redemption
from domain.members.referrals import (
    MadeReferral,
    ReceivedReferral,
)
from domain.members.status import MemberStatus
from domain.program import NAMESPACE, GuaranteePolicy, ProgramRules, Terms

MEMBER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PROJECTION = Cause("projection", SCHEDULER)  # a status read's what-if, never saved


@functools.lru_cache(maxsize=100_000)
def member_uuid(member_id: str) -> UUID:
    return uuid5(NAMESPACE, f"member:{member_id}")


def referral_code_for(member_id: str, attempt: int = 0) -> str:
    """8 characters of Crockford base32 (no I, L, O, U), derived from the member's id."""
    key = member_id if attempt == 0 else f"{member_id}#{attempt}"
    digest = member_uuid(key).bytes
    number = int.from_bytes(digest[:5], "big")
    return "".join(CROCKFORD[(number >> shift) & 31] for shift in range(35, -1, -5))


def check_enrolment(member_id: str, email: str, name: str | None) -> None:
    errors: dict[str, list[str]] = {}
    if not MEMBER_ID_PATTERN.match(member_id):
        errors["member_id"] = ["must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'"]
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        errors["email"] = ["must be an email address"]
    if name is not None and not 1 <= len(name) <= 200:
        errors["name"] = ["must be 1-200 characters"]
    if errors:
        raise InvalidInput(errors)


class Member(Aggregate):
    # Stored events name their classes by these topics, whatever module holds the code.
    TOPIC = "domain.members:Member"

    class Created(Aggregate.Created):
        TOPIC = "domain.members:Member.Created"  # unused: members are created by Enrolled

    class Enrolled(Aggregate.Created):
        """Version 2 holds the email and name sealed under the member's own data key, and a
        keyed digest of the normalised email for the self-referral rule; version 1 held them
        in plain text (upcast to ``legacy_email``/``legacy_name`` until they are sealed)."""

        TOPIC = "domain.members:Member.Enrolled"
        class_version = 2
        member_id: str
        sealed_email: str | None
        sealed_name: str | None
        email_digest: str | None
        referral_code: str
        at: datetime
        cause: str
        program_version: int
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Absent once the upgrade has sealed them and removed them from the stored row.
            state["legacy_email"] = state.pop("email", None)
            state["legacy_name"] = state.pop("name", None)
            state["sealed_email"] = state["sealed_name"] = state["email_digest"] = None

    # The events of each concept live with it; the aggregate names them all.
    Changed = MemberEvent
    PersonalDataSealed = personal.PersonalDataSealed
    PersonalDataErased = personal.PersonalDataErased
    PointsBecameAvailable = lots.PointsBecameAvailable
    PointsExpired = lots.PointsExpired
    PointsExpiring = lots.PointsExpiring
    TierUpgraded = tiers.TierUpgraded
    TierDowngraded = tiers.TierDowngraded
    TierRetained = tiers.TierRetained
    PurchaseRecorded = purchases.PurchaseRecorded
    PurchaseRefunded = purchases.PurchaseRefunded
    GuaranteeClaimed = purchases.GuaranteeClaimed
    GuaranteeExpiring = purchases.GuaranteeExpiring
    PointsRedeemed = redemptions.PointsRedeemed
    RedemptionCancelled = redemptions.RedemptionCancelled
    ReferredBy = referrals.ReferredBy
    ReferralRegistered = referrals.ReferralRegistered
    ReferralQualified = referrals.ReferralQualified
    ReferralCapped = referrals.ReferralCapped
    ReferralRewarded = referrals.ReferralRewarded
    ReferralVoided = referrals.ReferralVoided
    RefereeRewardPending = referrals.RefereeRewardPending
    RefereeReferralCapped = referrals.RefereeReferralCapped
    RefereeRewardVoided = referrals.RefereeRewardVoided
    BecameDormant = followups.BecameDormant
    FollowupStarted = followups.FollowupStarted
    FollowupStepDue = followups.FollowupStepDue
    FollowupStepWithheld = followups.FollowupStepWithheld
    FollowupOutcomeReported = followups.FollowupOutcomeReported
    FollowupStopped = followups.FollowupStopped

    def __init__(
        self,
        member_id: str,
        sealed_email: str | None,
        sealed_name: str | None,
        email_digest: str | None,
        referral_code: str,
        at: datetime,
        cause: str,
        program_version: int,
        actor: dict[str, str] | None = None,
        legacy_email: str | None = None,
        legacy_name: str | None = None,
    ) -> None:
        self.member_id = member_id
        self.personal = personal.PersonalData(
            sealed_email,
            sealed_name,
            email_digest,
            legacy_email=legacy_email,
            legacy_name=legacy_name,
        )
        self.referral_code = referral_code
        self.enrolled_at = at
        self.business_time = at
        self.standing = tiers.TierStanding(at)
        self.spend = tiers.SpendHistory()
        self.purchases: dict[str, Purchase] = {}
        self.open_guarantees = purchases.OpenGuarantees()
        self.categories: list[str] = []
        self.last_purchase_at: datetime | None = None
        self.lots = PointLots()
        self.redemptions: dict[str, Redemption] = {}
        self.lifetime_earned = 0
        self.clawed_back = 0
        self.redeemed = 0
        self.expired = 0
        self.last_refund: list[str] | None = None  # [order id, refund id] of the latest refund
        self.referral: ReceivedReferral | None = None
        self.referrals: dict[str, MadeReferral] = {}
        self.referral_order: list[str] = []
        self.qualified_referrals: list[str] = []
        self.followups = followups.MemberFollowups()
        self.dormant_noticed: datetime | None = None  # the last purchase it went quiet after

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        # Every member event names its member, so the global log reads without a lookup, and
        # records its cause and its actor (who did it).
        kwargs.setdefault("member_id", self.member_id)
        cause: Cause = kwargs.pop("cause")
        super().trigger_event(event_class, cause=cause.id, actor=cause.actor.to_dict(), **kwargs)

    def _trigger(
        self,
        event_class: Any,
        at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: Cause,
        **data: Any,
    ) -> None:
        self.trigger_event(
            event_class,
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=recorded_at,
            **data,
        )

    # Commands. Each checks everything first, then records due changes, then triggers.

    @classmethod
    def enrol(
        cls,
        member_id: str,
        email: str,
        name: str | None,
        sealer: personal.Sealer,
        terms: Terms,
        at: datetime,
        cause: Cause,
        referral_code: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Member:
        """A new member enrolled at ``at`` (its business time starts there), recorded at
        ``recorded_at`` (default: ``at``); its email and name are recorded only sealed under its
        own data key."""
        check_enrolment(member_id, email, name)
        return cls._create(
            cls.Enrolled,
            id=member_uuid(member_id),
            member_id=member_id,
            sealed_email=sealer.seal(member_id, "email", email),
            sealed_name=None if name is None else sealer.seal(member_id, "name", name),
            email_digest=sealer.digest(member_id, personal.normalise_email(email)),
            referral_code=referral_code or referral_code_for(member_id),
            at=at,
            cause=cause.id,
            actor=cause.actor.to_dict(),
            program_version=terms.version,
            timestamp=recorded_at or at,
        )

    def seal_legacy(
        self, sealer: personal.Sealer, at: datetime, terms: Terms, cause: Cause
    ) -> bool:
        """Seal the plain email and name an older version recorded; False if there were none."""
        held = self.personal
        if held.legacy_email is None or held.erased:
            return False
        self._trigger(
            self.PersonalDataSealed,
            self.business_time,
            terms,
            at,
            cause,
            sealed_email=sealer.seal(self.member_id, "email", held.legacy_email),
            sealed_name=None
            if held.legacy_name is None
            else sealer.seal(self.member_id, "name", held.legacy_name),
            email_digest=sealer.digest(self.member_id, personal.normalise_email(held.legacy_email)),
        )
        return True

    def erase_personal_data(self, at: datetime, terms: Terms, cause: Cause) -> None:
        """Record that the member's data key was destroyed: email and name are gone for good."""
        if self.personal.erased:
            return
        self._trigger(
            self.PersonalDataErased,
            self.business_time,
            terms,
            at,
            cause,
            erased=self.personal.fields(),
        )
        self.stop_followups("erased", self.business_time, terms, at, cause, every=True)

    def effective_time(self, occurred_at: datetime) -> datetime:
        """A late change keeps its occurred_at for reporting but takes effect at the latest time."""
        return max(occurred_at, self.business_time)

    def record_purchase(
        self,
        order_id: str,
        amount: Decimal,
        currency: str,
        occurred_at: datetime,
        items: list[LineItem],
        guarantee: GuaranteePolicy | None,
        terms: Terms,
        recorded_at: datetime,
        cause: Cause,
        until: datetime | None = None,
    ) -> None:
        """``until`` is the business time the member has reached (default: the later of the
        order's time and now); an import passes the order's own time, so history is replayed
        as it happened rather than collapsed onto today."""
        rules = terms.rules
        # Whatever is due by now is recorded first, as a scheduler run just before would have,
        # so where a late order takes effect never depends on when the scheduler last ran.
        business_now = max(occurred_at, recorded_at) if until is None else until
        self.record_due(business_now, terms, cause, recorded_at)
        at = self.effective_time(occurred_at)
        multiplier = rules.tier(self.standing.tier).multiplier
        points = points_for(amount, multiplier, rules.points_per_currency_unit)
        new_categories = sorted({item.category for item in items} - set(self.categories))
        bonus = rules.cross_sell_bonus if new_categories else 0
        window = rules.return_window_days
        sold = None
        if guarantee is not None:
            window = max(window, guarantee.window_days)
            sold = GuaranteeTerms.sold(guarantee, at).to_dict()
        available_at = at + timedelta(days=window)
        self._trigger(
            self.PurchaseRecorded,
            at,
            terms,
            recorded_at,
            cause,
            order_id=order_id,
            amount=amount,
            currency=currency,
            occurred_at=occurred_at,
            items=[item.to_dict() for item in items],
            guarantee=sold,
            points=points,
            bonus=bonus,
            new_categories=new_categories,
            available_at=available_at,
            expires_at=available_at + timedelta(days=rules.lot_lifetime_days),
        )
        reached = tiers.reached_by_upgrade(self.standing, self.spend, at, rules)
        if reached is not None:
            self._trigger(
                self.TierUpgraded,
                at,
                terms,
                recorded_at,
                cause,
                from_tier=self.standing.tier,
                to_tier=reached.name,
                review_at=at + timedelta(days=rules.tier_period_days),
                order_id=order_id,
            )
        self.stop_followups("purchased", at, terms, recorded_at, cause)

    def refund(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None,
        reason: str | None,
        occurred_at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: Cause,
    ) -> None:
        purchase = self.purchases[order_id]
        if purchase.claim is not None:
            raise GuaranteeAlreadyClaimed(
                f"order {order_id!r} was refunded by its guarantee claim; nothing is left to refund"
            )
        refundable = purchase.refundable
        if refundable <= 0:
            raise OverRefund(f"order {order_id!r} is already refunded in full", "amount")
        refunded = refundable if amount is None else amount
        if refunded > refundable:
            raise OverRefund(
                f"refund of {refunded} exceeds the {refundable} still refundable on this order",
                "amount",
            )
        at = self.effective_time(occurred_at)
        self.record_due(at, terms, cause, recorded_at)
        clawback = purchase.owed_after_refund(refunded)
        taken, debt = self.lots.plan_clawback(purchase.lot_id, clawback)
        self._trigger(
            self.PurchaseRefunded,
            at,
            terms,
            recorded_at,
            cause,
            order_id=order_id,
            refund_id=refund_id,
            amount=refunded,
            reason=reason,
            occurred_at=occurred_at,
            requested_amount=amount,
            points_clawed_back=clawback,
            taken=taken,
            debt=debt,
        )
        while (down := tiers.after_refund(self.standing, self.spend, at, terms.rules)) is not None:
            self._trigger(
                self.TierDowngraded,
                at,
                terms,
                recorded_at,
                cause,
                from_tier=self.standing.tier,
                to_tier=down.to_tier,
                reason="refund",
                since=down.since,
                review_at=down.review_at,
            )
        self.record_due(at, terms, cause, recorded_at)

    def claim_guarantee(
        self,
        order_id: str,
        claim_id: str,
        evidence: str | None,
        terms: Terms,
        now: datetime,
        cause: Cause,
    ) -> str:
        """Pay out the purchase's promise: refund the rest, claw back its points. Returns the
        refund id the claim recorded."""
        purchase = self.purchases[order_id]
        guarantee = purchase.guarantee
        if guarantee is None:
            raise NoGuarantee(f"order {order_id!r} was sold without a guarantee")
        if purchase.claim is not None:
            raise Conflict(
                f"the guarantee of order {order_id!r} was already claimed by "
                f"{purchase.claim.claim_id!r}",
                "claim_id",
            )
        if now >= guarantee.expires_at:
            raise GuaranteeWindowClosed(
                f"the {guarantee.policy} guarantee window closed at "
                f"{guarantee.expires_at.isoformat()}"
            )
        if guarantee.evidence_required and not (evidence or "").strip():
            raise EvidenceRequired(
                f"the {guarantee.policy} guarantee requires evidence", "evidence"
            )
        unrefunded = purchase.refundable
        if unrefunded <= 0:
            raise OverRefund(f"order {order_id!r} is already refunded in full")
        payout = guarantee.payout(unrefunded, purchase.currency)
        # '#' is outside the caller-chosen id alphabet, so no storefront refund id can collide.
        refund_id = f"guarantee-claim#{claim_id}"
        self.refund(order_id, refund_id, None, "guarantee claim", now, terms, now, cause)
        self._trigger(
            self.GuaranteeClaimed,
            self.effective_time(now),
            terms,
            now,
            cause,
            order_id=order_id,
            claim_id=claim_id,
            evidence=evidence,
            policy=guarantee.policy,
            refund_percent=guarantee.refund_percent,
            unrefunded=unrefunded,
            payout=payout,
            refund_id=refund_id,
        )
        return refund_id

    def redeem(
        self,
        redemption_id: str,
        reward: str | None,
        points: int | None,
        terms: Terms,
        at: datetime,
        cause: Cause,
        occurred_at: datetime | None = None,
    ) -> None:
        """Recorded at ``at``; taking effect at ``occurred_at`` (an imported redemption) or
        now, or at the member's business time if that is later."""
        if reward is not None:
            found = terms.rules.reward(reward)
            if found is None:
                raise UnknownReward(f"reward {reward!r} is not in the catalogue", "reward")
            points = found.points
        if points is None or points <= 0:
            raise InvalidInput({"points": ["give a positive number of points or a reward"]})
        recorded_at, at = at, self.effective_time(at if occurred_at is None else occurred_at)
        self.record_due(at, terms, cause, recorded_at)
        available = self.lots.spendable_points()
        if available < points:
            raise InsufficientPoints(
                f"{points} points requested but only {available} are available", "points"
            )
        self._trigger(
            self.PointsRedeemed,
            at,
            terms,
            recorded_at,
            cause,
            redemption_id=redemption_id,
            points=points,
            reward=reward,
            taken=self.lots.plan_redemption(points),
        )

    def cancel_redemption(
        self, redemption_id: str, terms: Terms, at: datetime, cause: Cause
    ) -> None:
        redemption = self.redemptions[redemption_id]
        if redemption.cancelled_at is not None:
            raise RedemptionAlreadyCancelled(f"redemption {redemption_id!r} is already cancelled")
        recorded_at, at = at, self.effective_time(at)
        self.record_due(at, terms, cause, recorded_at)
        returned = [
            {"points": n, "expires_at": self.lots[lot_id].expires_at, "from_lot": lot_id}
            for lot_id, n in redemption.taken.items()
        ]
        self._trigger(
            self.RedemptionCancelled,
            at,
            terms,
            recorded_at,
            cause,
            redemption_id=redemption_id,
            returned=returned,
        )
        # A returned lot whose original expiry has passed expires at once.
        self.record_due(at, terms, cause, recorded_at)

    # Follow-ups.

    def start_followup(
        self, start: followups.FollowupStart, terms: Terms, now: datetime, cause: Cause
    ) -> bool:
        """Start the follow-up the process decided on (False: it was started before). Steps
        already due are recorded at once; if the member purchased between the trigger and now
        and the plan stops on a purchase, the steps due by that purchase are recorded and the
        follow-up stops there, as it would have had it started on time."""
        if start.followup in self.followups.by_id:
            return False
        self.record_due(now, terms, cause, now)
        stop_at = None
        if start.stop == "purchased" and len(self.purchases) > start.purchases_at_trigger:
            stop_at = list(self.purchases.values())[start.purchases_at_trigger].at
        self._trigger(
            self.FollowupStarted,
            self.business_time,
            terms,
            now,
            cause,
            followup=start.followup,
            plan=start.plan,
            plan_version=start.plan_version,
            group=start.group,
            trigger=start.trigger,
            trigger_at=start.trigger_at,
            steps=followups.steps_of(start),
            stop=start.stop,
            goal=followups.goal_of(start),
        )
        if stop_at is None:
            self.record_due(now, terms, cause, now)
            return True
        self.record_due(stop_at, terms, cause, now)
        started = self.followups.by_id[start.followup]
        if started.state == followups.ACTIVE:
            self._trigger(
                self.FollowupStopped,
                self.business_time,
                terms,
                now,
                cause,
                followup=start.followup,
                reason="purchased",
            )
        return True

    def report_followup_outcome(
        self,
        followup: str,
        step: int,
        outcome: str,
        detail: str | None,
        terms: Terms,
        now: datetime,
        cause: Cause,
    ) -> bool:
        """The shop's report of what became of a due step (False: the same report again)."""
        if outcome not in followups.OUTCOMES:
            raise InvalidInput({"outcome": ["must be sent or failed"]})
        self.record_due(now, terms, cause, now)
        if not followups.check_outcome(self, followup, step, outcome, detail):
            return False
        self._trigger(
            self.FollowupOutcomeReported,
            self.business_time,
            terms,
            now,
            cause,
            followup=followup,
            step=step,
            outcome=outcome,
            detail=detail,
        )
        return True

    def stop_followups(
        self,
        reason: str,
        at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: Cause,
        every: bool = False,
    ) -> None:
        """End the active follow-ups whose stop condition is ``reason`` (``every``: all)."""
        book = self.followups
        if not book.active:
            return
        ending = [book.by_id[f] for f in book.active] if every else book.stoppable(reason)
        for followup in ending:
            self._trigger(
                self.FollowupStopped,
                at,
                terms,
                recorded_at,
                cause,
                followup=followup.id,
                reason=reason,
            )

    # Time-driven changes.

    def next_due_at(self, terms: Terms) -> datetime | None:
        """When the scheduler next has something to record: a change, or a notice ``terms``
        ask for."""
        found = due.next_due(self, terms.rules)
        return found.when if found else None

    def next_change_at(self) -> datetime | None:
        """When what the member holds next changes with time alone (notices change nothing)."""
        found = due.next_change(self)
        return found.when if found else None

    def record_due(self, until: datetime, terms: Terms, cause: Cause, recorded_at: datetime) -> int:
        """Record, in time order, every lot maturing or expiring, tier review, referral reward
        and notice due by ``until``."""
        return due.record(self, until, terms, cause, recorded_at)

    # State helpers used by the events' change methods (so they run on replay too).

    def prune_due(self) -> None:
        """After every event: what is queued to fall due is what still will."""
        self.lots.prune()
        self.open_guarantees.prune(self.purchases, self.business_time)

    def award(self, lot_id: str, points: int, available_at: datetime, expires_at: datetime) -> None:
        """Newly earned points: a pending lot, counted in lifetime_earned."""
        self.lots.add(lot_id, points, LotStatus.PENDING, available_at, expires_at)
        self.lifetime_earned += points

    def claw_back(self, taken: dict[str, int], points: int, debt: int) -> None:
        """Points taken back (refund, voided reward): from the planned lots, the rest as debt."""
        self.lots.take(taken)
        self.clawed_back += points
        self.lots.debt += debt

    def received_referral(self) -> ReceivedReferral:
        assert self.referral is not None, "a referee event before the member was referred"
        return self.referral

    # Queries.

    def qualifying_spend(self, at: datetime, rules: ProgramRules) -> Decimal:
        return tiers.qualifying_spend(self.spend, at, rules)

    def available_points(self) -> int:
        return self.lots.spendable_points()

    def lot_points(self, lot_id: str) -> int:
        """The points a lot was opened with; 0 if it never was (an award of no points)."""
        lot = self.lots.lots.get(lot_id)
        return 0 if lot is None else lot.points

    def value_facts(self) -> value.MemberFacts:
        return status.value_facts(self)

    def promises(self) -> list[Promise]:
        return [p for purchase in self.purchases.values() if (p := purchase.promise()) is not None]

    def projected(self, at: datetime, terms: Terms, notices: bool = False) -> Member:
        """This member as it will be at ``at`` once due changes are recorded; self is untouched
        (and is the answer when only notices are due: they change nothing the status shows).
        ``notices``: with the notices too, for a read of what they change (follow-up steps)."""
        due = self.next_due_at(terms) if notices else self.next_change_at()
        if due is None or due > at:
            return self
        future = copy.deepcopy(self)
        future.record_due(at, terms, PROJECTION, at)
        return future

    def status(self, at: datetime, terms: Terms) -> MemberStatus:
        """The status the member answers at ``at``, with what falls due by then recorded."""
        return status.answer(self.projected(at, terms), at, terms.rules)

    def status_changes_at(self, at: datetime, terms: Terms) -> datetime | None:
        return status.changes_at(self.projected(at, terms), at, terms.rules)
