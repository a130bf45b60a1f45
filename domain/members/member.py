"""The Member aggregate: its events, and the commands that decide them.

Every state change is an event whose ``change`` runs again on every replay, so each command
checks first and triggers afterwards. The bookkeeping lives with its concept: lots in ``lots``,
tier standing in ``tiers``, purchases and refunds in ``purchases``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import value
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
from domain.members import tiers
from domain.members.lots import DueKind, LotStatus, PointLots
from domain.members.purchases import (
    Claim,
    GuaranteeTerms,
    LineItem,
    Purchase,
    Refund,
    points_for,
)
from domain.members.redemptions import Redemption, returned_lot
from domain.members.referrals import (
    AgreedTerms,
    MadeReferral,
    ReceivedReferral,
    ReferralState,
)
from domain.members.status import MemberStatus, NextTier, PointsStatus, TierStatus, stage
from domain.program import NAMESPACE, GuaranteePolicy, ProgramRules, Terms

MEMBER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def member_uuid(member_id: str) -> UUID:
    return uuid5(NAMESPACE, f"member:{member_id}")


def referral_code_for(member_id: str, attempt: int = 0) -> str:
    """8 characters of Crockford base32 (no I, L, O, U), derived from the member's id."""
    key = member_id if attempt == 0 else f"{member_id}#{attempt}"
    digest = member_uuid(key).bytes
    number = int.from_bytes(digest[:5], "big")
    return "".join(CROCKFORD[(number >> shift) & 31] for shift in range(35, -1, -5))


def _lot_refs(taken: list[list[int]]) -> dict[str, int]:
    """Version 1 events named lots by the order they were opened in: ``#<n>``."""
    return {f"#{index}": points for index, points in taken}


class Member(Aggregate):
    # Stored events name their classes by these topics, whatever module holds the code.
    TOPIC = "domain.members:Member"

    class Created(Aggregate.Created):
        TOPIC = "domain.members:Member.Created"  # unused: members are created by Enrolled

    class Enrolled(Aggregate.Created):
        TOPIC = "domain.members:Member.Enrolled"
        member_id: str
        email: str
        name: str | None
        referral_code: str
        at: datetime
        cause: str
        program_version: int

    class Changed(Aggregate.Event):
        """Base of every later member event: whose, business time, cause and program version."""

        TOPIC = "domain.members:Member.Changed"

        member_id: str
        at: datetime
        cause: str
        program_version: int

        def apply(self, aggregate: Any) -> None:
            aggregate.business_time = max(aggregate.business_time, self.at)
            self.change(aggregate)
            aggregate.lots.prune()

        def change(self, member: Member) -> None:
            """The state change of this event, run on every replay."""

    class PurchaseRecorded(Changed):
        TOPIC = "domain.members:Member.PurchaseRecorded"
        class_version = 2
        order_id: str
        amount: Decimal
        currency: str
        occurred_at: datetime
        items: list[dict[str, Any]]
        guarantee: dict[str, Any] | None
        points: int
        bonus: int
        new_categories: list[str]
        available_at: datetime
        expires_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.pop("lot")  # a lot is opened whenever the purchase earns points

        def change(self, member: Member) -> None:
            purchase = Purchase(
                order_id=self.order_id,
                member_id=self.member_id,
                seq=len(member.purchases),
                amount=self.amount,
                currency=self.currency,
                occurred_at=self.occurred_at,
                at=self.at,
                recorded_at=self.timestamp,
                items=self.items,
                guarantee=None if self.guarantee is None else GuaranteeTerms(**self.guarantee),
                points=self.points,
                bonus=self.bonus,
                available_at=self.available_at,
                program_version=self.program_version,
                tier_before=member.standing.tier,
                tier_after=member.standing.tier,
            )
            member.purchases[self.order_id] = purchase
            member.spend.add(self.at, self.amount)
            member.categories.extend(self.new_categories)
            member.last_purchase_at = self.at
            if purchase.earned > 0:
                member.award(purchase.lot_id, purchase.earned, self.available_at, self.expires_at)

    class TierUpgraded(Changed):
        TOPIC = "domain.members:Member.TierUpgraded"
        from_tier: str
        to_tier: str
        review_at: datetime
        order_id: str

        def change(self, member: Member) -> None:
            member.standing.upgrade(self.to_tier, self.at, self.review_at)
            purchase = member.purchases[self.order_id]
            member.purchases[self.order_id] = replace(purchase, tier_after=self.to_tier)

    class TierDowngraded(Changed):
        TOPIC = "domain.members:Member.TierDowngraded"
        from_tier: str
        to_tier: str
        reason: str
        since: datetime
        review_at: datetime | None

        def change(self, member: Member) -> None:
            if member.last_refund is not None:
                order_id, refund_id = member.last_refund
                purchase = member.purchases[order_id]
                refund = purchase.refunds[refund_id]
                # Recorded by the refund's own command: what its response says the tier is.
                if (refund.at, refund.recorded_at) == (self.at, self.timestamp):
                    member.purchases[order_id] = purchase.with_refund_tier(refund_id, self.to_tier)
            member.standing.downgrade(
                self.to_tier, self.since, self.review_at, after_refund=self.reason == "refund"
            )

    class TierRetained(Changed):
        TOPIC = "domain.members:Member.TierRetained"
        tier: str
        review_at: datetime

        def change(self, member: Member) -> None:
            member.standing.retain(self.review_at)

    class PointsBecameAvailable(Changed):
        TOPIC = "domain.members:Member.PointsBecameAvailable"
        class_version = 2
        lot: str
        points: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lot"] = f"#{state['lot']}"

        def change(self, member: Member) -> None:
            member.lots.mature(self.lot)

    class PointsExpired(Changed):
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

    class PurchaseRefunded(Changed):
        TOPIC = "domain.members:Member.PurchaseRefunded"
        class_version = 2
        order_id: str
        refund_id: str
        amount: Decimal
        reason: str | None
        occurred_at: datetime
        requested_amount: Decimal | None
        points_clawed_back: int
        taken: dict[str, int]
        debt: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["taken"] = _lot_refs(state["taken"])

        def change(self, member: Member) -> None:
            purchase = member.purchases[self.order_id]
            member.spend.refund(purchase.seq, self.amount)
            tier = member.standing.tier
            refund = Refund(
                refund_id=self.refund_id,
                amount=self.amount,
                requested_amount=self.requested_amount,
                reason=self.reason,
                occurred_at=self.occurred_at,
                at=self.at,
                recorded_at=self.timestamp,
                points_clawed_back=self.points_clawed_back,
                tier_before=tier,
                refunded_total=purchase.refunded + self.amount,
                tier_after=tier,
            )
            member.purchases[self.order_id] = purchase.with_refund(refund)
            member.last_refund = [self.order_id, self.refund_id]
            member.claw_back(self.taken, self.points_clawed_back, self.debt)

    class GuaranteeClaimed(Changed):
        """The customer was not satisfied inside the window: the promise is paid out."""

        TOPIC = "domain.members:Member.GuaranteeClaimed"

        order_id: str
        claim_id: str
        evidence: str | None
        policy: str
        refund_percent: int
        unrefunded: Decimal
        payout: Decimal
        refund_id: str

        def change(self, member: Member) -> None:
            purchase = member.purchases[self.order_id]
            refund = purchase.refunds[self.refund_id]
            claim = Claim(
                claim_id=self.claim_id,
                evidence=self.evidence,
                policy=self.policy,
                refund_percent=self.refund_percent,
                unrefunded=self.unrefunded,
                payout=self.payout,
                refund_id=self.refund_id,
                claimed_at=self.at,
                recorded_at=self.timestamp,
                points_clawed_back=refund.points_clawed_back,
                tier_before=refund.tier_before,
                tier_after=refund.tier_after,
            )
            member.purchases[self.order_id] = replace(purchase, claim=claim)

    class PointsRedeemed(Changed):
        TOPIC = "domain.members:Member.PointsRedeemed"
        class_version = 2
        redemption_id: str
        points: int
        reward: str | None
        taken: dict[str, int]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["taken"] = _lot_refs(state["taken"])

        def change(self, member: Member) -> None:
            member.lots.take(self.taken)
            member.redeemed += self.points
            member.redemptions[self.redemption_id] = Redemption(
                redemption_id=self.redemption_id,
                member_id=self.member_id,
                points=self.points,
                reward=self.reward,
                taken={member.lots.resolve(ref): n for ref, n in self.taken.items()},
                redeemed_at=self.at,
                available_after=member.lots.spendable_points(),
            )

    class RedemptionCancelled(Changed):
        TOPIC = "domain.members:Member.RedemptionCancelled"
        class_version = 2
        redemption_id: str
        returned: list[dict[str, Any]]  # points, expires_at and from_lot of each part

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            for part in state["returned"]:
                part["from_lot"] = f"#{part['from_lot']}"

        def change(self, member: Member) -> None:
            redemption = member.redemptions[self.redemption_id]
            member.redeemed -= redemption.points
            lots = member.lots
            expiring = 0
            for part in self.returned:
                lot_id = returned_lot(self.redemption_id, lots.resolve(part["from_lot"]))
                lot = lots.add(
                    lot_id, part["points"], LotStatus.AVAILABLE, self.at, part["expires_at"]
                )
                lots.settle_debt(lot)
                if lot.expires_at <= self.at:
                    expiring += lot.remaining
            # Returned points past their expiry expire at once, right after this event.
            member.redemptions[self.redemption_id] = redemption.cancelled(
                self.at, lots.spendable_points() - expiring
            )

    class ReferredBy(Changed):
        """This member enrolled with another member's referral code."""

        TOPIC = "domain.members:Member.ReferredBy"

        referrer_id: str
        code: str
        terms: dict[str, Any]

        def change(self, member: Member) -> None:
            terms = AgreedTerms.from_dict(self.terms)
            member.referral = ReceivedReferral(self.referrer_id, self.code, terms)

    class ReferralRegistered(Changed):
        """A friend enrolled with this member's referral code."""

        TOPIC = "domain.members:Member.ReferralRegistered"

        referee_id: str
        code: str
        terms: dict[str, Any]

        def change(self, member: Member) -> None:
            member.referrals[self.referee_id] = MadeReferral(
                referee_id=self.referee_id,
                code=self.code,
                terms=AgreedTerms.from_dict(self.terms),
                registered_at=self.at,
                seq=len(member.referral_order),
                causes={"registered": self.cause},
            )
            member.referral_order.append(self.referee_id)

    class ReferralQualified(Changed):
        """The friend's first purchase of at least the threshold: a pending reward for both."""

        TOPIC = "domain.members:Member.ReferralQualified"

        class_version = 2
        referee_id: str
        order_id: str
        points: int
        reward_at: datetime
        expires_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.pop("lot")  # a lot is opened whenever the reward has points

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.state = ReferralState.QUALIFIED
            referral.qualified_at = self.at
            referral.order_id = self.order_id
            referral.reward_at = self.reward_at
            referral.causes["qualified"] = self.cause
            member.qualified_referrals.append(self.referee_id)
            if self.points > 0:
                member.award(referral.lot_id, self.points, self.reward_at, self.expires_at)

    class ReferralCapped(Changed):
        """The friend qualified, but the referrer had reached the cap: no reward for either."""

        TOPIC = "domain.members:Member.ReferralCapped"

        referee_id: str
        order_id: str

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.state = ReferralState.CAPPED
            referral.capped_at = self.at
            referral.order_id = self.order_id
            referral.causes["capped"] = self.cause

    class ReferralRewarded(Changed):
        """The qualifying purchase's return window passed: the rewards stand."""

        TOPIC = "domain.members:Member.ReferralRewarded"

        referee_id: str

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.state = ReferralState.REWARDED
            referral.rewarded_at = self.at
            referral.causes["rewarded"] = self.cause
            member.qualified_referrals.remove(self.referee_id)

    class ReferralVoided(Changed):
        """The qualifying purchase was refunded inside its window: the reward is taken back."""

        TOPIC = "domain.members:Member.ReferralVoided"

        class_version = 2
        referee_id: str
        refund_id: str
        points_clawed_back: int
        taken: dict[str, int]
        debt: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["taken"] = _lot_refs(state["taken"])

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.state = ReferralState.VOIDED
            referral.voided_at = self.at
            referral.causes["voided"] = self.cause
            member.qualified_referrals.remove(self.referee_id)
            member.claw_back(self.taken, self.points_clawed_back, self.debt)

    class RefereeRewardPending(Changed):
        """This member's own reward for enrolling with a code, pending like the purchase."""

        TOPIC = "domain.members:Member.RefereeRewardPending"

        class_version = 2
        referrer_id: str
        order_id: str
        points: int
        available_at: datetime
        expires_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.pop("lot")  # a lot is opened whenever the reward has points

        def change(self, member: Member) -> None:
            referral = member.received_referral()
            referral.state = ReferralState.QUALIFIED
            referral.order_id = self.order_id
            if self.points > 0:
                member.award(referral.lot_id, self.points, self.available_at, self.expires_at)

    class RefereeReferralCapped(Changed):
        TOPIC = "domain.members:Member.RefereeReferralCapped"
        referrer_id: str
        order_id: str

        def change(self, member: Member) -> None:
            referral = member.received_referral()
            referral.state = ReferralState.CAPPED
            referral.order_id = self.order_id

    class RefereeRewardVoided(Changed):
        TOPIC = "domain.members:Member.RefereeRewardVoided"
        class_version = 2
        referrer_id: str
        refund_id: str
        points_clawed_back: int
        taken: dict[str, int]
        debt: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["taken"] = _lot_refs(state["taken"])

        def change(self, member: Member) -> None:
            member.received_referral().state = ReferralState.VOIDED
            member.claw_back(self.taken, self.points_clawed_back, self.debt)

    def __init__(
        self,
        member_id: str,
        email: str,
        name: str | None,
        referral_code: str,
        at: datetime,
        cause: str,
        program_version: int,
    ) -> None:
        self.member_id = member_id
        self.email = email
        self.name = name
        self.referral_code = referral_code
        self.enrolled_at = at
        self.business_time = at
        self.standing = tiers.TierStanding(at)
        self.spend = tiers.SpendHistory()
        self.purchases: dict[str, Purchase] = {}
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

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        # Every member event names its member, so the global log reads without a lookup.
        kwargs.setdefault("member_id", self.member_id)
        super().trigger_event(event_class, **kwargs)

    def _trigger(
        self,
        event_class: Any,
        at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: str,
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
        terms: Terms,
        at: datetime,
        cause: str,
        referral_code: str | None = None,
    ) -> Member:
        errors: dict[str, list[str]] = {}
        if not MEMBER_ID_PATTERN.match(member_id):
            errors["member_id"] = ["must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'"]
        if len(email) > 254 or not EMAIL_PATTERN.match(email):
            errors["email"] = ["must be an email address"]
        if name is not None and not 1 <= len(name) <= 200:
            errors["name"] = ["must be 1-200 characters"]
        if errors:
            raise InvalidInput(errors)
        return cls._create(
            cls.Enrolled,
            id=member_uuid(member_id),
            member_id=member_id,
            email=email,
            name=name,
            referral_code=referral_code or referral_code_for(member_id),
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=at,
        )

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
        cause: str,
    ) -> None:
        rules = terms.rules
        # Whatever is due by now is recorded first, as a scheduler run just before would have,
        # so where a late order takes effect never depends on when the scheduler last ran.
        self.record_due(max(occurred_at, recorded_at), terms, cause, recorded_at)
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

    def refund(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None,
        reason: str | None,
        occurred_at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: str,
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
        cause: str,
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
        cause: str,
    ) -> None:
        if reward is not None:
            found = terms.rules.reward(reward)
            if found is None:
                raise UnknownReward(f"reward {reward!r} is not in the catalogue", "reward")
            points = found.points
        if points is None or points <= 0:
            raise InvalidInput({"points": ["give a positive number of points or a reward"]})
        recorded_at, at = at, self.effective_time(at)
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

    def cancel_redemption(self, redemption_id: str, terms: Terms, at: datetime, cause: str) -> None:
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

    # Time-driven changes.

    def next_due_at(self) -> datetime | None:
        due = self._next_due()
        return due[0] if due else None

    def _next_due(self) -> tuple[datetime, DueKind, int, str] | None:
        """The earliest change due: (when, what, order among equals, which lot or referee)."""
        best = self.lots.next_due()
        review_at = self.standing.review_at
        if review_at is not None:
            review = (review_at, DueKind.TIER_REVIEW, -1, "")
            if best is None or review[:3] < best[:3]:
                best = review
        for referee_id in self.qualified_referrals:
            referral = self.referrals[referee_id]
            assert referral.reward_at is not None
            reward = (referral.reward_at, DueKind.REFERRAL_REWARD, referral.seq, referee_id)
            if best is None or reward[:3] < best[:3]:
                best = reward
        return best

    def record_due(self, until: datetime, terms: Terms, cause: str, recorded_at: datetime) -> int:
        """Record, in time order, every lot maturing or expiring, tier review and referral reward
        due."""
        count = 0
        while (due := self._next_due()) is not None and due[0] <= until:
            when, kind, _, key = due
            when = max(when, self.business_time)
            common = {"at": when, "cause": cause, "program_version": terms.version}
            if kind is DueKind.LOT_MATURES:
                points = self.lots[key].remaining
                self.trigger_event(
                    self.PointsBecameAvailable,
                    lot=key,
                    points=points,
                    timestamp=recorded_at,
                    **common,
                )
            elif kind is DueKind.LOT_EXPIRES:
                points = self.lots[key].remaining
                self.trigger_event(
                    self.PointsExpired, lot=key, points=points, timestamp=recorded_at, **common
                )
            elif kind is DueKind.TIER_REVIEW:
                self._review_tier(when, terms, recorded_at, cause)
            else:
                self._trigger(
                    self.ReferralRewarded, when, terms, recorded_at, cause, referee_id=key
                )
            count += 1
        return count

    def _review_tier(self, when: datetime, terms: Terms, recorded_at: datetime, cause: str) -> None:
        rules = terms.rules
        next_review = when + timedelta(days=rules.tier_period_days)
        lower = tiers.review(self.standing, self.spend, when, rules)
        if lower is None:
            self._trigger(
                self.TierRetained,
                when,
                terms,
                recorded_at,
                cause,
                tier=self.standing.tier,
                review_at=next_review,
            )
            return
        self._trigger(
            self.TierDowngraded,
            when,
            terms,
            recorded_at,
            cause,
            from_tier=self.standing.tier,
            to_tier=lower.name,
            reason="review",
            since=when,
            review_at=next_review if rules.tier_rank(lower.name) > 0 else None,
        )

    # State helpers used by the events' change methods (so they run on replay too).

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
        """What the member brought and cost: purchases, refunds (a claim's own refund counted
        inside its payout), payouts, points redeemed."""
        facts = value.MemberFacts(self.member_id, self.enrolled_at)
        for purchase in self.purchases.values():
            facts.add_purchase(purchase.occurred_at, purchase.amount)
            facts.refunds += purchase.refunded
            if purchase.claim is not None:
                facts.refunds -= purchase.claim.unrefunded
                facts.guarantee_payouts += purchase.claim.payout
        facts.points_redeemed = self.redeemed
        return facts

    def promises(self) -> list[Promise]:
        return [p for purchase in self.purchases.values() if (p := purchase.promise()) is not None]

    def projected(self, at: datetime, terms: Terms) -> Member:
        """This member as it will be at ``at`` once due changes are recorded; self is untouched."""
        due = self.next_due_at()
        if due is None or due > at:
            return self
        future = copy.deepcopy(self)
        future.record_due(at, terms, "projection", at)
        return future

    def status(self, at: datetime, terms: Terms) -> MemberStatus:
        member = self.projected(at, terms)
        return member._status(max(at, member.business_time), terms.rules, at)

    def status_changes_at(self, at: datetime, terms: Terms) -> datetime | None:
        """The first instant after ``at`` from which, with no new event, ``status`` may read
        differently than at ``at`` (beyond ``as_of``); None if it never will.

        A read model stores the status of ``at`` with this instant, and serves it until then.
        The status moves with time only through: changes falling due (lots, reviews, referral
        rewards), the lifecycle stage's idle thresholds, and purchases leaving the trailing tier
        window (no purchase takes effect after the member's business time, so none enters it).
        """
        member = self.projected(at, terms)
        rules = terms.rules
        candidates: list[datetime] = []
        if member.business_time > at:
            candidates.append(member.business_time)
        due = member.next_due_at()
        if due is not None:
            candidates.append(due)
        if member.purchases and member.last_purchase_at is not None:
            for days in (rules.dormant_days, rules.lost_days):
                candidates.append(member.last_purchase_at + timedelta(days=days))
        period = timedelta(days=rules.tier_period_days)
        leaving = member.spend.first_leaving(max(at, member.business_time), period)
        if leaving is not None:
            candidates.append(leaving)
        later = [moment for moment in candidates if moment > at]
        return min(later) if later else None

    def _status(self, at: datetime, rules: ProgramRules, as_of: datetime) -> MemberStatus:
        standing = self.standing
        spend = self.qualifying_spend(at, rules)
        above = rules.tier_above(standing.tier)
        pending = self.lots.pending_lots()
        return MemberStatus(
            member_id=self.member_id,
            email=self.email,
            name=self.name,
            enrolled_at=self.enrolled_at,
            stage=stage(
                len(self.purchases),
                self.last_purchase_at,
                rules.tier_rank(standing.tier),
                at,
                rules.dormant_days,
                rules.lost_days,
            ),
            tier=TierStatus(
                name=standing.tier,
                since=standing.since,
                review_at=standing.review_at,
                qualifying_spend=spend,
                next=None
                if above is None
                else NextTier(above.name, max(above.threshold - spend, Decimal(0))),
                spend_to_keep=tiers.spend_to_keep(standing, self.spend, at, rules),
            ),
            points=PointsStatus(
                available=self.available_points(),
                pending=sum(lot.points for lot in pending),
                lifetime_earned=self.lifetime_earned,
                clawed_back=self.clawed_back,
                redeemed=self.redeemed,
                expired=self.expired,
                pending_lots=sorted(pending, key=lambda lot: lot.available_at),
            ),
            referral_code=self.referral_code,
            as_of=as_of,
            currency=rules.currency,
        )
