"""The Member aggregate: enrolment, purchases, point lots, tiers, refunds and redemptions.

Every state change is an event whose ``apply`` runs again on every replay, so each command
checks first and triggers afterwards. State is plain lists and dicts so that snapshots need
no custom transcoding.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import value
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
from domain.money import ZERO, floor_whole, format_money, half_even
from domain.program import NAMESPACE, GuaranteePolicy, ProgramRules

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


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class LineItem:
    sku: str
    category: str
    quantity: int
    unit_price: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "category": self.category,
            "quantity": self.quantity,
            "unit_price": str(self.unit_price),
        }


@dataclass(frozen=True)
class Terms:
    """The program version a command runs under."""

    version: int
    rules: ProgramRules


class Member(Aggregate):
    class Enrolled(Aggregate.Created):
        member_id: str
        email: str
        name: str | None
        referral_code: str
        at: datetime
        cause: str
        program_version: int

    class Changed(Aggregate.Event):
        """Base of every later member event: whose, business time, cause and program version."""

        member_id: str
        at: datetime
        cause: str
        program_version: int

        def apply(self, aggregate: Any) -> None:
            aggregate.business_time = max(aggregate.business_time, self.at)
            self.change(aggregate)
            aggregate.prune_due_lots()

        def change(self, member: Member) -> None:
            """The state change of this event, run on every replay."""

    class PurchaseRecorded(Changed):
        order_id: str
        amount: Decimal
        currency: str
        occurred_at: datetime
        items: list[dict[str, Any]]
        guarantee: dict[str, Any] | None
        points: int
        bonus: int
        new_categories: list[str]
        lot: int | None
        available_at: datetime
        expires_at: datetime

        def change(self, member: Member) -> None:
            member.purchases[self.order_id] = {
                "order_id": self.order_id,
                "amount": self.amount,
                "currency": self.currency,
                "occurred_at": self.occurred_at,
                "at": self.at,
                "recorded_at": self.timestamp,
                "items": self.items,
                "guarantee": self.guarantee,
                "points": self.points,
                "bonus": self.bonus,
                "lot": self.lot,
                "available_at": self.available_at,
                "refunded": ZERO,
                "clawed": 0,
                "refunds": {},
                "tier_before": member.tier,
                "tier_after": member.tier,
                "program_version": self.program_version,
            }
            member.purchases[self.order_id]["seq"] = len(member.purchase_order)
            member.purchase_order.append(self.order_id)
            member.spend_times.append(self.at)
            member.spend_totals.append(member.spend_totals[-1] + self.amount)
            member.categories.extend(self.new_categories)
            member.last_purchase_at = self.at
            if self.lot is not None:
                member.award_lot(
                    self.points + self.bonus,
                    self.available_at,
                    self.expires_at,
                    f"purchase:{self.order_id}",
                )

    class TierUpgraded(Changed):
        from_tier: str
        to_tier: str
        review_at: datetime
        order_id: str

        def change(self, member: Member) -> None:
            member.upgrades.append(
                {
                    "from": self.from_tier,
                    "since": member.tier_since,
                    "review_at": member.review_at,
                    "upgraded_at": self.at,
                }
            )
            member.tier = self.to_tier
            member.tier_since = self.at
            member.review_at = self.review_at
            member.purchases[self.order_id]["tier_after"] = self.to_tier

    class TierDowngraded(Changed):
        from_tier: str
        to_tier: str
        reason: str
        since: datetime
        review_at: datetime | None

        def change(self, member: Member) -> None:
            if self.reason != "refund":
                member.upgrades.clear()
            elif member.upgrades and member.upgrades[-1]["from"] == self.to_tier:
                member.upgrades.pop()
            # A refund that leaves part of a jump keeps the upgrade, so a later one can undo it.
            if member.last_refund is not None:
                order_id, refund_id = member.last_refund
                refund = member.purchases[order_id]["refunds"][refund_id]
                # Recorded by the refund's own command: what its response says the tier is.
                if (refund["at"], refund["recorded_at"]) == (self.at, self.timestamp):
                    refund["tier_after"] = self.to_tier
            member.tier = self.to_tier
            member.tier_since = self.since
            member.review_at = self.review_at

    class TierRetained(Changed):
        tier: str
        review_at: datetime

        def change(self, member: Member) -> None:
            member.upgrades.clear()
            member.review_at = self.review_at

    class PointsBecameAvailable(Changed):
        lot: int
        points: int

        def change(self, member: Member) -> None:
            lot = member.lots[self.lot]
            member.balance["pending"] -= lot["remaining"]
            member.balance["available"] += lot["remaining"]
            lot["status"] = "available"
            heapq.heappush(member.due_lots, [lot["expires_at"], 1, self.lot])
            member.settle_debt(self.lot)

    class PointsExpired(Changed):
        lot: int
        points: int

        def change(self, member: Member) -> None:
            lot = member.lots[self.lot]
            lot["remaining"] -= self.points
            member.balance["available"] -= self.points
            lot["status"] = "expired"
            member.expired += self.points
            member.close_lot_if_empty(self.lot)

    class PurchaseRefunded(Changed):
        order_id: str
        refund_id: str
        amount: Decimal
        reason: str | None
        occurred_at: datetime
        requested_amount: Decimal | None
        points_clawed_back: int
        taken: list[list[int]]
        debt: int

        def change(self, member: Member) -> None:
            purchase = member.purchases[self.order_id]
            purchase["refunded"] += self.amount
            # The running totals after this purchase all lose the refunded amount.
            totals = member.spend_totals
            for i in range(purchase["seq"] + 1, len(totals)):
                totals[i] -= self.amount
            purchase["clawed"] += self.points_clawed_back
            purchase["refunds"][self.refund_id] = {
                "refund_id": self.refund_id,
                "amount": self.amount,
                "requested_amount": self.requested_amount,
                "reason": self.reason,
                "occurred_at": self.occurred_at,
                "at": self.at,
                "recorded_at": self.timestamp,
                "points_clawed_back": self.points_clawed_back,
                "tier_before": member.tier,
                # What the refund left, so that a repeat answers as the first request did.
                "refunded_total": purchase["refunded"],
                "tier_after": member.tier,
            }
            member.last_refund = [self.order_id, self.refund_id]
            member.claw_back(self.taken, self.points_clawed_back, self.debt)

    class GuaranteeClaimed(Changed):
        """The customer was not satisfied inside the window: the promise is paid out."""

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
            refund = purchase["refunds"][self.refund_id]
            purchase["claim"] = {
                "claim_id": self.claim_id,
                "evidence": self.evidence,
                "policy": self.policy,
                "refund_percent": self.refund_percent,
                "unrefunded": self.unrefunded,
                "payout": self.payout,
                "refund_id": self.refund_id,
                "claimed_at": self.at,
                "recorded_at": self.timestamp,
                "points_clawed_back": refund["points_clawed_back"],
                "tier_before": refund["tier_before"],
                "tier_after": refund["tier_after"],
            }

    class PointsRedeemed(Changed):
        redemption_id: str
        points: int
        reward: str | None
        taken: list[list[int]]

        def change(self, member: Member) -> None:
            member.take_from_lots(self.taken)
            member.redeemed += self.points
            member.redemptions[self.redemption_id] = {
                "redemption_id": self.redemption_id,
                "points": self.points,
                "reward": self.reward,
                "taken": self.taken,
                "redeemed_at": self.at,
                "cancelled_at": None,
                # The balance the first response showed, for repeats.
                "available_after": member.available_points(),
                "available_after_cancel": None,
            }

    class RedemptionCancelled(Changed):
        redemption_id: str
        returned: list[dict[str, Any]]

        def change(self, member: Member) -> None:
            redemption = member.redemptions[self.redemption_id]
            redemption["cancelled_at"] = self.at
            member.redeemed -= redemption["points"]
            expiring = 0
            for lot in self.returned:
                index = member.open_lot(
                    points=lot["points"],
                    status="available",
                    available_at=self.at,
                    expires_at=lot["expires_at"],
                    source=f"redemption:{self.redemption_id}",
                )
                member.settle_debt(index)
                if lot["expires_at"] <= self.at:
                    expiring += member.lots[index]["remaining"]
            # Returned points past their expiry expire at once, right after this event.
            redemption["available_after_cancel"] = member.available_points() - expiring

    class ReferredBy(Changed):
        """This member enrolled with another member's referral code."""

        referrer_id: str
        code: str
        terms: dict[str, Any]

        def change(self, member: Member) -> None:
            member.referral = {
                "referrer_id": self.referrer_id,
                "code": self.code,
                "terms": self.terms,
                "state": "registered",
                "order_id": None,
                "lot": None,
            }

    class ReferralRegistered(Changed):
        """A friend enrolled with this member's referral code."""

        referee_id: str
        code: str
        terms: dict[str, Any]

        def change(self, member: Member) -> None:
            member.referrals[self.referee_id] = {
                "referee_id": self.referee_id,
                "code": self.code,
                "terms": self.terms,
                "state": "registered",
                "registered_at": self.at,
                "qualified_at": None,
                "rewarded_at": None,
                "voided_at": None,
                "capped_at": None,
                "order_id": None,
                "reward_at": None,
                "lot": None,
                "causes": {"registered": self.cause},
                "seq": len(member.referral_order),
            }
            member.referral_order.append(self.referee_id)

    class ReferralQualified(Changed):
        """The friend's first purchase of at least the threshold: a pending reward for both."""

        referee_id: str
        order_id: str
        points: int
        lot: int | None
        reward_at: datetime
        expires_at: datetime

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.update(
                state="qualified",
                qualified_at=self.at,
                order_id=self.order_id,
                reward_at=self.reward_at,
                lot=self.lot,
            )
            referral["causes"]["qualified"] = self.cause
            member.qualified_referrals.append(self.referee_id)
            if self.lot is not None:
                member.award_lot(
                    self.points, self.reward_at, self.expires_at, f"referral:{self.referee_id}"
                )

    class ReferralCapped(Changed):
        """The friend qualified, but the referrer had reached the cap: no reward for either."""

        referee_id: str
        order_id: str

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.update(state="capped", capped_at=self.at, order_id=self.order_id)
            referral["causes"]["capped"] = self.cause

    class ReferralRewarded(Changed):
        """The qualifying purchase's return window passed: the rewards stand."""

        referee_id: str

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.update(state="rewarded", rewarded_at=self.at)
            referral["causes"]["rewarded"] = self.cause
            member.qualified_referrals.remove(self.referee_id)

    class ReferralVoided(Changed):
        """The qualifying purchase was refunded inside its window: the reward is taken back."""

        referee_id: str
        refund_id: str
        points_clawed_back: int
        taken: list[list[int]]
        debt: int

        def change(self, member: Member) -> None:
            referral = member.referrals[self.referee_id]
            referral.update(state="voided", voided_at=self.at)
            referral["causes"]["voided"] = self.cause
            referral["void_refund_id"] = self.refund_id
            member.qualified_referrals.remove(self.referee_id)
            member.claw_back(self.taken, self.points_clawed_back, self.debt)

    class RefereeRewardPending(Changed):
        """This member's own reward for enrolling with a code, pending like the purchase."""

        referrer_id: str
        order_id: str
        points: int
        lot: int | None
        available_at: datetime
        expires_at: datetime

        def change(self, member: Member) -> None:
            assert member.referral is not None
            member.referral.update(state="qualified", order_id=self.order_id, lot=self.lot)
            if self.lot is not None:
                member.award_lot(
                    self.points,
                    self.available_at,
                    self.expires_at,
                    f"referred-by:{self.referrer_id}",
                )

    class RefereeReferralCapped(Changed):
        referrer_id: str
        order_id: str

        def change(self, member: Member) -> None:
            assert member.referral is not None
            member.referral.update(state="capped", order_id=self.order_id)

    class RefereeRewardVoided(Changed):
        referrer_id: str
        refund_id: str
        points_clawed_back: int
        taken: list[list[int]]
        debt: int

        def change(self, member: Member) -> None:
            assert member.referral is not None
            member.referral["state"] = "voided"
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
        self.tier = "bronze"
        self.tier_since = at
        self.review_at: datetime | None = None
        self.upgrades: list[dict[str, Any]] = []
        self.purchases: dict[str, dict[str, Any]] = {}
        self.purchase_order: list[str] = []
        self.categories: list[str] = []
        self.last_purchase_at: datetime | None = None
        self.lots: list[dict[str, Any]] = []
        self.open_lots: list[int] = []
        # Derived indexes, kept by the events' apply methods: points by lot status, a heap of
        # the lots' next due times, and running spend totals by effective time.
        self.balance: dict[str, int] = {"pending": 0, "available": 0}
        self.due_lots: list[list[Any]] = []
        self.spend_times: list[datetime] = []
        self.spend_totals: list[Decimal] = [ZERO]
        self.redemptions: dict[str, dict[str, Any]] = {}
        self.lifetime_earned = 0
        self.clawed_back = 0
        self.redeemed = 0
        self.expired = 0
        self.debt = 0
        self.last_refund: list[str] | None = None
        self.referral: dict[str, Any] | None = None
        self.referrals: dict[str, dict[str, Any]] = {}
        self.referral_order: list[str] = []
        self.qualified_referrals: list[str] = []

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        # Every member event names its member, so the global log reads without a lookup.
        kwargs.setdefault("member_id", self.member_id)
        super().trigger_event(event_class, **kwargs)

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

    def same_enrolment(self, email: str, name: str | None) -> bool:
        return self.email == email and self.name == name

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
        multiplier = rules.tier(self.tier).multiplier
        points = floor_whole(Decimal(floor_whole(amount)) * multiplier)
        new_categories = sorted({item.category for item in items} - set(self.categories))
        bonus = rules.cross_sell_bonus if new_categories else 0
        window = rules.return_window_days
        guarantee_terms = None
        if guarantee is not None:
            window = max(window, guarantee.window_days)
            guarantee_terms = {
                "policy": guarantee.name,
                "refund_percent": guarantee.refund_percent,
                "window_days": guarantee.window_days,
                "evidence_required": guarantee.evidence_required,
                "expires_at": at + timedelta(days=guarantee.window_days),
            }
        available_at = at + timedelta(days=window)
        self.trigger_event(
            self.PurchaseRecorded,
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=recorded_at,
            order_id=order_id,
            amount=amount,
            currency=currency,
            occurred_at=occurred_at,
            items=[item.to_dict() for item in items],
            guarantee=guarantee_terms,
            points=points,
            bonus=bonus,
            new_categories=new_categories,
            lot=len(self.lots) if points + bonus > 0 else None,
            available_at=available_at,
            expires_at=available_at + timedelta(days=rules.lot_lifetime_days),
        )
        reached = rules.tier_for_spend(self.qualifying_spend(at, rules))
        if rules.tier_rank(reached.name) > rules.tier_rank(self.tier):
            self.trigger_event(
                self.TierUpgraded,
                at=at,
                cause=cause,
                program_version=terms.version,
                timestamp=recorded_at,
                from_tier=self.tier,
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
        if purchase.get("claim") is not None:
            raise GuaranteeAlreadyClaimed(
                f"order {order_id!r} was refunded by its guarantee claim; nothing is left to refund"
            )
        refundable = purchase["amount"] - purchase["refunded"]
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
        earned = purchase["points"] + purchase["bonus"]
        # Cumulative and rounded up, so a full refund takes back exactly what was awarded.
        owed = math.ceil(earned * (purchase["refunded"] + refunded) / purchase["amount"])
        clawback = max(owed - purchase["clawed"], 0)
        taken, debt = self.plan_clawback(purchase["lot"], clawback)
        self.trigger_event(
            self.PurchaseRefunded,
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=recorded_at,
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
        self.downgrade_after_refund(at, terms, recorded_at, cause)
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
        guarantee = purchase["guarantee"]
        if guarantee is None:
            raise NoGuarantee(f"order {order_id!r} was sold without a guarantee")
        if purchase.get("claim") is not None:
            raise Conflict(
                f"the guarantee of order {order_id!r} was already claimed by "
                f"{purchase['claim']['claim_id']!r}",
                "claim_id",
            )
        closed: datetime = guarantee["expires_at"]
        if now >= closed:
            raise GuaranteeWindowClosed(
                f"the {guarantee['policy']} guarantee window closed at {closed.isoformat()}"
            )
        if guarantee["evidence_required"] and not (evidence or "").strip():
            raise EvidenceRequired(
                f"the {guarantee['policy']} guarantee requires evidence", "evidence"
            )
        unrefunded = purchase["amount"] - purchase["refunded"]
        if unrefunded <= 0:
            raise OverRefund(f"order {order_id!r} is already refunded in full")
        payout = half_even(
            unrefunded * Decimal(guarantee["refund_percent"]) / 100, purchase["currency"]
        )
        # '#' is outside the caller-chosen id alphabet, so no storefront refund id can collide.
        refund_id = f"guarantee-claim#{claim_id}"
        self.refund(order_id, refund_id, None, "guarantee claim", now, terms, now, cause)
        self.trigger_event(
            self.GuaranteeClaimed,
            at=self.effective_time(now),
            cause=cause,
            program_version=terms.version,
            timestamp=now,
            order_id=order_id,
            claim_id=claim_id,
            evidence=evidence,
            policy=guarantee["policy"],
            refund_percent=guarantee["refund_percent"],
            unrefunded=unrefunded,
            payout=payout,
            refund_id=refund_id,
        )
        return refund_id

    def claim_view(self, order_id: str, currency: str) -> dict[str, Any]:
        claim = self.purchases[order_id]["claim"]
        return {
            "claim_id": claim["claim_id"],
            "order_id": order_id,
            "member_id": self.member_id,
            "policy": claim["policy"],
            "refund_percent": claim["refund_percent"],
            "evidence": claim["evidence"],
            "refunded_amount": format_money(claim["unrefunded"], currency),
            "payout": format_money(claim["payout"], currency),
            "currency": currency,
            "points_clawed_back": claim["points_clawed_back"],
            "claimed_at": iso(claim["claimed_at"]),
            "recorded_at": iso(claim["recorded_at"]),
            "tier": claim["tier_after"],
            "tier_changed": claim["tier_after"] != claim["tier_before"],
        }

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
        available = self.available_points()
        if available < points:
            raise InsufficientPoints(
                f"{points} points requested but only {available} are available", "points"
            )
        taken: list[list[int]] = []
        wanted = points
        for index in self.spendable_lots():
            if wanted == 0:
                break
            take = min(self.lots[index]["remaining"], wanted)
            taken.append([index, take])
            wanted -= take
        self.trigger_event(
            self.PointsRedeemed,
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=recorded_at,
            redemption_id=redemption_id,
            points=points,
            reward=reward,
            taken=taken,
        )

    def cancel_redemption(self, redemption_id: str, terms: Terms, at: datetime, cause: str) -> None:
        redemption = self.redemptions[redemption_id]
        if redemption["cancelled_at"] is not None:
            raise RedemptionAlreadyCancelled(f"redemption {redemption_id!r} is already cancelled")
        recorded_at, at = at, self.effective_time(at)
        self.record_due(at, terms, cause, recorded_at)
        returned = [
            {"points": n, "expires_at": self.lots[index]["expires_at"], "from_lot": index}
            for index, n in redemption["taken"]
        ]
        self.trigger_event(
            self.RedemptionCancelled,
            at=at,
            cause=cause,
            program_version=terms.version,
            timestamp=recorded_at,
            redemption_id=redemption_id,
            returned=returned,
        )
        # A returned lot whose original expiry has passed expires at once.
        self.record_due(at, terms, cause, recorded_at)

    # Time-driven changes.

    def next_due_at(self) -> datetime | None:
        due = self._next_due()
        return due[0] if due else None

    def _next_due(self) -> tuple[datetime, int, int] | None:
        best: tuple[datetime, int, int] | None = None
        if self.due_lots:
            when, kind, index = self.due_lots[0]
            best = (when, kind, index)
        if self.review_at is not None:
            candidate = (self.review_at, 2, -1)
            if best is None or candidate < best:
                best = candidate
        for referee_id in self.qualified_referrals:
            referral = self.referrals[referee_id]
            candidate = (referral["reward_at"], 3, referral["seq"])
            if best is None or candidate < best:
                best = candidate
        return best

    def record_due(self, until: datetime, terms: Terms, cause: str, recorded_at: datetime) -> int:
        """Record, in time order, every lot maturing or expiring, tier review and referral reward
        due."""
        count = 0
        while True:
            due = self._next_due()
            if due is None or due[0] > until:
                return count
            when, kind, index = due
            when = max(when, self.business_time)
            common: dict[str, Any] = {
                "at": when,
                "cause": cause,
                "program_version": terms.version,
                "timestamp": recorded_at,
            }
            if kind == 0:
                points = self.lots[index]["remaining"]
                self.trigger_event(self.PointsBecameAvailable, lot=index, points=points, **common)
            elif kind == 1:
                points = self.lots[index]["remaining"]
                self.trigger_event(self.PointsExpired, lot=index, points=points, **common)
            elif kind == 2:
                self.review_tier(when, terms, common)
            else:
                referee_id = self.referral_order[index]
                self.trigger_event(self.ReferralRewarded, referee_id=referee_id, **common)
            count += 1

    def review_tier(self, when: datetime, terms: Terms, common: dict[str, Any]) -> None:
        rules = terms.rules
        next_review = when + timedelta(days=rules.tier_period_days)
        current = rules.tier(self.tier)
        if rules.tier_for_spend(self.qualifying_spend(when, rules)).threshold >= current.threshold:
            self.trigger_event(self.TierRetained, tier=self.tier, review_at=next_review, **common)
            return
        lower = rules.tier_below(self.tier)
        self.trigger_event(
            self.TierDowngraded,
            from_tier=self.tier,
            to_tier=lower.name,
            reason="review",
            since=when,
            review_at=next_review if rules.tier_rank(lower.name) > 0 else None,
            **common,
        )

    def downgrade_after_refund(
        self,
        at: datetime,
        terms: Terms,
        recorded_at: datetime,
        cause: str,
    ) -> None:
        """Undo the upgrades whose spend, net of refunds, no longer reaches the tier they gave."""
        rules = terms.rules
        period = timedelta(days=rules.tier_period_days)
        while self.upgrades:
            upgrade = self.upgrades[-1]
            # The tier stands if the spend behind the upgrade (net of refunds; spend that has
            # only aged out of the window since is covered by the grace) or today's still
            # reaches it.
            reached = max(
                rules.tier_for_spend(self.qualifying_spend(upgrade["upgraded_at"], rules)),
                rules.tier_for_spend(self.qualifying_spend(at, rules)),
                key=lambda tier: rules.tier_rank(tier.name),
            )
            if rules.tier_rank(reached.name) >= rules.tier_rank(self.tier):
                return
            target = upgrade["from"]
            if rules.tier_rank(reached.name) > rules.tier_rank(target):
                target = reached.name
            self.trigger_event(
                self.TierDowngraded,
                at=at,
                cause=cause,
                program_version=terms.version,
                timestamp=recorded_at,
                from_tier=self.tier,
                to_tier=target,
                reason="refund",
                since=upgrade["since"] if target == upgrade["from"] else at,
                review_at=upgrade["review_at"] if target == upgrade["from"] else at + period,
            )

    # State helpers used by the events' apply methods (so they run on replay too).

    def open_lot(
        self,
        points: int,
        status: str,
        available_at: datetime,
        expires_at: datetime,
        source: str,
    ) -> int:
        index = len(self.lots)
        self.lots.append(
            {
                "points": points,
                "remaining": points,
                "status": status,
                "available_at": available_at,
                "expires_at": expires_at,
                "source": source,
            }
        )
        self.open_lots.append(index)
        self.balance[status] += points
        due = available_at if status == "pending" else expires_at
        heapq.heappush(self.due_lots, [due, 0 if status == "pending" else 1, index])
        return index

    def prune_due_lots(self) -> None:
        """Drop queued due times of lots that were emptied or moved on since they were queued."""
        heap = self.due_lots
        while heap:
            _, kind, index = heap[0]
            lot = self.lots[index]
            if lot["remaining"] > 0 and lot["status"] == ("pending", "available")[kind]:
                return
            heapq.heappop(heap)

    def award_lot(
        self, points: int, available_at: datetime, expires_at: datetime, source: str
    ) -> None:
        """Newly earned points: a pending lot, counted in lifetime_earned."""
        self.open_lot(points, "pending", available_at, expires_at, source)
        self.lifetime_earned += points

    def claw_back(self, taken: list[list[int]], points: int, debt: int) -> None:
        """Points taken back (refund, voided reward): from the planned lots, the rest as debt."""
        self.take_from_lots(taken)
        self.clawed_back += points
        self.debt += debt

    def close_lot_if_empty(self, index: int) -> None:
        lot = self.lots[index]
        if lot["remaining"] == 0 and index in self.open_lots:
            self.open_lots.remove(index)
            if lot["status"] == "pending":
                lot["status"] = "void"

    def take_from_lots(self, taken: list[list[int]]) -> None:
        for index, points in taken:
            lot = self.lots[index]
            lot["remaining"] -= points
            self.balance[lot["status"]] -= points
            self.close_lot_if_empty(index)

    def settle_debt(self, index: int) -> None:
        """Points clawed back beyond the balance are repaid by the next lot to become available."""
        lot = self.lots[index]
        settled = min(self.debt, lot["remaining"])
        if settled:
            lot["remaining"] -= settled
            self.balance[lot["status"]] -= settled
            self.debt -= settled
            self.close_lot_if_empty(index)

    def plan_clawback(self, own_lot: int | None, points: int) -> tuple[list[list[int]], int]:
        """From the purchase's own lot first, then the oldest other lots, then into debt."""
        order = ([own_lot] if own_lot in self.open_lots else []) + [
            i for i in self.open_lots if i != own_lot
        ]
        taken: list[list[int]] = []
        wanted = points
        for index in order:
            if wanted == 0:
                break
            take = min(self.lots[index]["remaining"], wanted)
            if take:
                taken.append([index, take])
                wanted -= take
        return taken, wanted

    def spendable_lots(self) -> list[int]:
        available = [i for i in self.open_lots if self.lots[i]["status"] == "available"]
        return sorted(available, key=lambda i: (self.lots[i]["available_at"], i))

    # Queries.

    def qualifying_spend(
        self, at: datetime, rules: ProgramRules, since: datetime | None = None
    ) -> Decimal:
        """Net spend of the purchases that took effect in the trailing period ending at ``at``."""
        start = since if since is not None else at - timedelta(days=rules.tier_period_days)
        first = bisect.bisect_right(self.spend_times, start)
        last = bisect.bisect_right(self.spend_times, at)
        if last <= first:
            return ZERO
        return self.spend_totals[last] - self.spend_totals[first]

    def available_points(self) -> int:
        return self.balance["available"] - self.debt

    def pending_lots(self) -> list[dict[str, Any]]:
        return [
            {"points": self.lots[i]["remaining"], "available_at": self.lots[i]["available_at"]}
            for i in self.open_lots
            if self.lots[i]["status"] == "pending"
        ]

    def stage(self, at: datetime, rules: ProgramRules) -> str:
        count = len(self.purchases)
        if count == 0 or self.last_purchase_at is None:
            return "prospect"
        idle = at - self.last_purchase_at
        if idle >= timedelta(days=rules.lost_days):
            return "lost"
        if idle >= timedelta(days=rules.dormant_days):
            return "dormant"
        if count == 1:
            return "new"
        return "loyal" if rules.tier_rank(self.tier) >= 2 else "repeat"

    def projected(self, at: datetime, terms: Terms) -> Member:
        """This member as it will be at ``at`` once due changes are recorded; self is untouched."""
        due = self.next_due_at()
        if due is None or due > at:
            return self
        future = copy.deepcopy(self)
        future.record_due(at, terms, "projection", at)
        return future

    def status(self, at: datetime, terms: Terms) -> dict[str, Any]:
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
        effective = max(at, member.business_time)
        candidates: list[datetime] = []
        if member.business_time > at:
            candidates.append(member.business_time)
        due = member.next_due_at()
        if due is not None:
            candidates.append(due)
        if member.purchases and member.last_purchase_at is not None:
            for days in (rules.dormant_days, rules.lost_days):
                candidates.append(member.last_purchase_at + timedelta(days=days))
        times = member.spend_times
        period = timedelta(days=rules.tier_period_days)
        leaving = bisect.bisect_right(times, effective - period)
        if leaving < len(times):
            candidates.append(times[leaving] + period)
        later = [moment for moment in candidates if moment > at]
        return min(later) if later else None

    def _status(self, at: datetime, rules: ProgramRules, as_of: datetime) -> dict[str, Any]:
        currency = rules.currency
        spend = self.qualifying_spend(at, rules)
        above = rules.tier_above(self.tier)
        keep = ZERO
        if self.review_at is not None:
            kept = self.qualifying_spend(
                at, rules, since=self.review_at - timedelta(days=rules.tier_period_days)
            )
            keep = max(rules.tier(self.tier).threshold - kept, ZERO)
        pending = self.pending_lots()
        pending_total = sum(lot["points"] for lot in pending)
        return {
            "member_id": self.member_id,
            "email": self.email,
            "name": self.name,
            "enrolled_at": iso(self.enrolled_at),
            "stage": self.stage(at, rules),
            "tier": {
                "name": self.tier,
                "since": iso(self.tier_since),
                "review_at": iso(self.review_at),
                "qualifying_spend": format_money(spend, currency),
                "next": None
                if above is None
                else {
                    "name": above.name,
                    "spend_needed": format_money(max(above.threshold - spend, ZERO), currency),
                },
                "spend_to_keep": format_money(keep, currency),
            },
            "points": {
                "available": self.available_points(),
                "pending": pending_total,
                "lifetime_earned": self.lifetime_earned,
                "clawed_back": self.clawed_back,
                "redeemed": self.redeemed,
                "expired": self.expired,
                "pending_lots": [
                    {"points": lot["points"], "available_at": iso(lot["available_at"])}
                    for lot in sorted(pending, key=lambda lot: lot["available_at"])
                ],
            },
            "referral_code": self.referral_code,
            "as_of": iso(as_of),
        }

    def value_facts(self) -> value.MemberFacts:
        """What the member brought and cost, as the ledger folds it from the events: purchases,
        refunds (a claim's own refund counted inside its payout), payouts, points redeemed."""
        facts = value.MemberFacts(self.member_id, self.enrolled_at)
        for purchase in self.purchases.values():
            facts.add_purchase(purchase["occurred_at"], purchase["amount"])
            facts.refunds += purchase["refunded"]
            claim = purchase.get("claim")
            if claim is not None:
                facts.refunds -= claim["unrefunded"]
                facts.guarantee_payouts += claim["payout"]
        facts.points_redeemed = self.redeemed
        return facts

    def purchase_view(self, order_id: str, currency: str) -> dict[str, Any]:
        purchase = self.purchases[order_id]
        guarantee = purchase["guarantee"]
        refunds = sorted(purchase["refunds"].values(), key=lambda r: r["recorded_at"])
        return {
            "order_id": order_id,
            "member_id": self.member_id,
            "amount": format_money(purchase["amount"], currency),
            "currency": purchase["currency"],
            "occurred_at": iso(purchase["occurred_at"]),
            "effective_at": iso(purchase["at"]),
            "recorded_at": iso(purchase["recorded_at"]),
            "program_version": purchase["program_version"],
            "items": purchase["items"],
            "points_awarded": purchase["points"],
            "bonus_points": purchase["bonus"],
            "points_clawed_back": purchase["clawed"],
            "points_available_at": iso(purchase["available_at"]),
            "refunded_amount": format_money(purchase["refunded"], currency),
            "refundable_amount": format_money(purchase["amount"] - purchase["refunded"], currency),
            "refunds": [self.refund_view(order_id, r["refund_id"], currency) for r in refunds],
            "guarantee": None
            if guarantee is None
            else {
                "policy": guarantee["policy"],
                "refund_percent": guarantee["refund_percent"],
                "evidence_required": guarantee["evidence_required"],
                "expires_at": iso(guarantee["expires_at"]),
            },
            "claim": None if purchase.get("claim") is None else self.claim_view(order_id, currency),
        }

    def purchase_response(self, order_id: str, currency: str) -> dict[str, Any]:
        """The 201 body of a purchase, the same when the purchase is posted again."""
        view = self.purchase_view(order_id, currency)
        purchase = self.purchases[order_id]
        return {
            "order_id": order_id,
            "member_id": self.member_id,
            "amount": view["amount"],
            "currency": view["currency"],
            "occurred_at": view["occurred_at"],
            "recorded_at": view["recorded_at"],
            "program_version": view["program_version"],
            "points_awarded": view["points_awarded"],
            "bonus_points": view["bonus_points"],
            "points_available_at": view["points_available_at"],
            "tier": purchase["tier_after"],
            "tier_changed": purchase["tier_after"] != purchase["tier_before"],
            "guarantee": None
            if view["guarantee"] is None
            else {
                "policy": view["guarantee"]["policy"],
                "refund_percent": view["guarantee"]["refund_percent"],
                "expires_at": view["guarantee"]["expires_at"],
            },
        }

    def refund_view(self, order_id: str, refund_id: str, currency: str) -> dict[str, Any]:
        refund = self.purchases[order_id]["refunds"][refund_id]
        return {
            "refund_id": refund_id,
            "order_id": order_id,
            "amount": format_money(refund["amount"], currency),
            "reason": refund["reason"],
            "occurred_at": iso(refund["occurred_at"]),
            "recorded_at": iso(refund["recorded_at"]),
            "points_clawed_back": refund["points_clawed_back"],
        }

    def redemption_view(self, redemption_id: str) -> dict[str, Any]:
        redemption = self.redemptions[redemption_id]
        return {
            "redemption_id": redemption_id,
            "member_id": self.member_id,
            "points": redemption["points"],
            "reward": redemption["reward"],
            "redeemed_at": iso(redemption["redeemed_at"]),
            "cancelled_at": iso(redemption["cancelled_at"]),
        }


class Ownership(Aggregate):
    """Which member an order or a redemption id belongs to.

    Its id is derived from the natural key, so creating it twice conflicts in the event store:
    that is what makes an order id unique across concurrent requests and members.
    """

    class Recorded(Aggregate.Created):
        kind: str
        key: str
        member_id: str

    def __init__(self, kind: str, key: str, member_id: str) -> None:
        self.kind = kind
        self.key = key
        self.member_id = member_id

    @staticmethod
    def key_id(kind: str, key: str) -> UUID:
        return uuid5(NAMESPACE, f"{kind}:{key}")

    @classmethod
    def record(cls, kind: str, key: str, member_id: str, at: datetime) -> Ownership:
        return cls._create(
            cls.Recorded,
            id=cls.key_id(kind, key),
            kind=kind,
            key=key,
            member_id=member_id,
            timestamp=at,
        )


def check_same(existing: dict[str, Any], requested: dict[str, Any], what: str) -> None:
    """Idempotency: the same id with different content is a conflict."""
    differences = sorted(k for k in requested if existing.get(k) != requested[k])
    if differences:
        raise Conflict(
            f"{what} was already recorded with a different {', '.join(differences)}",
            differences[0],
        )
