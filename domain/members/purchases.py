"""Purchases, refunds and guarantee claims as the member's ledger holds them, and their rules."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.analytics import Promise
from domain.errors import Conflict
from domain.members.events import MemberEvent, lot_refs
from domain.money import ZERO, floor_whole, half_even
from domain.program import GuaranteePolicy

if TYPE_CHECKING:
    from domain.members.member import Member


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
class GuaranteeTerms:
    """The promise sold with a purchase: the policy's terms on the day of the sale."""

    policy: str
    refund_percent: int
    window_days: int
    evidence_required: bool
    expires_at: datetime

    @classmethod
    def sold(cls, policy: GuaranteePolicy, at: datetime) -> GuaranteeTerms:
        return cls(
            policy.name,
            policy.refund_percent,
            policy.window_days,
            policy.evidence_required,
            at + timedelta(days=policy.window_days),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "refund_percent": self.refund_percent,
            "window_days": self.window_days,
            "evidence_required": self.evidence_required,
            "expires_at": self.expires_at,
        }

    def payout(self, unrefunded: Decimal, currency: str) -> Decimal:
        return half_even(unrefunded * Decimal(self.refund_percent) / 100, currency)


@dataclass(frozen=True)
class Refund:
    refund_id: str
    amount: Decimal
    requested_amount: Decimal | None
    reason: str | None
    occurred_at: datetime
    at: datetime
    recorded_at: datetime
    points_clawed_back: int
    tier_before: str
    # What the refund left, so that a repeat answers as the first request did.
    refunded_total: Decimal
    tier_after: str


@dataclass(frozen=True)
class Claim:
    claim_id: str
    evidence: str | None
    policy: str
    refund_percent: int
    unrefunded: Decimal
    payout: Decimal
    refund_id: str
    claimed_at: datetime
    recorded_at: datetime
    points_clawed_back: int
    tier_before: str
    tier_after: str


@dataclass(frozen=True)
class Purchase:
    order_id: str
    member_id: str
    seq: int  # the n-th purchase of the member: where its spend sits in the running totals
    amount: Decimal
    currency: str
    occurred_at: datetime
    at: datetime
    recorded_at: datetime
    items: list[dict[str, Any]]
    guarantee: GuaranteeTerms | None
    points: int
    bonus: int
    available_at: datetime
    program_version: int
    tier_before: str
    tier_after: str
    refunded: Decimal = ZERO
    clawed: int = 0
    refunds: dict[str, Refund] = field(default_factory=dict)
    claim: Claim | None = None
    guarantee_noticed: bool = False  # the member was told the window closes soon: once

    @property
    def lot_id(self) -> str:
        return purchase_lot(self.order_id)

    def as_requested(self) -> dict[str, Any]:
        """The purchase in the terms of its request, for comparing a repeat with it."""
        return {
            "amount": self.amount,
            "currency": self.currency,
            "occurred_at": self.occurred_at,
            "items": self.items,
            "guarantee": None if self.guarantee is None else self.guarantee.policy,
        }

    def promise(self) -> Promise | None:
        """What the guarantee sold with it still promises, for the liability figures."""
        if self.guarantee is None:
            return None
        return Promise(
            policy=self.guarantee.policy,
            refund_percent=self.guarantee.refund_percent,
            expires_at=self.guarantee.expires_at,
            amount=self.amount,
            refunded=self.refunded,
            payout=None if self.claim is None else self.claim.payout,
        )

    def awaits_guarantee_notice(self, now: datetime) -> bool:
        """Its guarantee is still open at ``now`` (not claimed, not refunded in full, the window
        not closed) and the member was not yet told it closes soon."""
        terms = self.guarantee
        if terms is None or self.guarantee_noticed or self.claim is not None:
            return False
        return self.refundable > 0 and now < terms.expires_at

    @property
    def earned(self) -> int:
        return self.points + self.bonus

    @property
    def refundable(self) -> Decimal:
        return self.amount - self.refunded

    def owed_after_refund(self, refunded: Decimal) -> int:
        """Points the purchase must give back once ``refunded`` more is refunded: cumulative and
        rounded up, so a full refund takes back exactly what was awarded."""
        owed = math.ceil(self.earned * (self.refunded + refunded) / self.amount)
        return max(owed - self.clawed, 0)

    def with_refund(self, refund: Refund) -> Purchase:
        return replace(
            self,
            refunded=self.refunded + refund.amount,
            clawed=self.clawed + refund.points_clawed_back,
            refunds={**self.refunds, refund.refund_id: refund},
        )

    def with_refund_tier(self, refund_id: str, tier: str) -> Purchase:
        refund = replace(self.refunds[refund_id], tier_after=tier)
        return replace(self, refunds={**self.refunds, refund_id: refund})


class OpenGuarantees:
    """The guarantees that may still need a notice, closing first on top: [closes_at, seq, order
    id]. The notice days are a program rule, so guarantees are queued by when they close."""

    def __init__(self) -> None:
        self.queue: list[list[Any]] = []

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def add(self, purchase: Purchase) -> None:
        assert purchase.guarantee is not None
        heapq.heappush(self.queue, [purchase.guarantee.expires_at, purchase.seq, purchase.order_id])

    def next_notice(
        self, purchases: dict[str, Purchase], days: int
    ) -> tuple[datetime, int, str] | None:
        """The earliest notice of a window closing within ``days`` (none if ``days`` is 0): that
        many days before, or at once if the purchase was later than that."""
        if days <= 0 or not self.queue:
            return None
        closes_at, seq, order_id = self.queue[0]
        assert isinstance(closes_at, datetime) and isinstance(order_id, str)
        return max(closes_at - timedelta(days=days), purchases[order_id].at), seq, order_id

    def prune(self, purchases: dict[str, Purchase], now: datetime) -> None:
        """Drop guarantees with nothing left to tell: told, claimed, refunded in full or closed."""
        queue = self.queue
        while queue and not purchases[queue[0][2]].awaits_guarantee_notice(now):
            heapq.heappop(queue)


def purchase_lot(order_id: str) -> str:
    return f"purchase:{order_id}"


def points_for(amount: Decimal, multiplier: Decimal, per_unit: int = 1) -> int:
    """Points per whole currency unit, times the tier's multiplier, rounded down."""
    return floor_whole(Decimal(floor_whole(amount) * per_unit) * multiplier)


def check_same(existing: dict[str, Any], requested: dict[str, Any], what: str) -> None:
    """Idempotency: the same id with different content is a conflict."""
    differences = sorted(k for k in requested if existing.get(k) != requested[k])
    if differences:
        raise Conflict(
            f"{what} was already recorded with a different {', '.join(differences)}",
            differences[0],
        )


# Events: each change runs again on every replay.


class PurchaseRecorded(MemberEvent):
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
        if purchase.guarantee is not None:
            member.open_guarantees.add(purchase)


class PurchaseRefunded(MemberEvent):
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
        state["taken"] = lot_refs(state["taken"])

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


class GuaranteeClaimed(MemberEvent):
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


class GuaranteeExpiring(MemberEvent):
    """A notice, not a change of money or points: the guarantee's window closes soon."""

    TOPIC = "domain.members:Member.GuaranteeExpiring"

    order_id: str
    policy: str
    closes_at: datetime

    def change(self, member: Member) -> None:
        purchase = member.purchases[self.order_id]
        member.purchases[self.order_id] = replace(purchase, guarantee_noticed=True)
