"""The status a member answers: tier standing, points and lifecycle stage at an instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING

from domain import value
from domain.analytics import Holding
from domain.members import tiers
from domain.members.lots import PendingPoints
from domain.members.personal import PersonalData
from domain.program import ProgramRules

if TYPE_CHECKING:
    from domain.members.member import Member


class Stage(Enum):
    PROSPECT = "prospect"
    NEW = "new"
    REPEAT = "repeat"
    LOYAL = "loyal"
    DORMANT = "dormant"
    LOST = "lost"


def stage(
    purchases: int,
    last_purchase_at: datetime | None,
    tier_rank: int,
    at: datetime,
    dormant_days: int,
    lost_days: int,
) -> Stage:
    if purchases == 0 or last_purchase_at is None:
        return Stage.PROSPECT
    idle = at - last_purchase_at
    if idle >= timedelta(days=lost_days):
        return Stage.LOST
    if idle >= timedelta(days=dormant_days):
        return Stage.DORMANT
    if purchases == 1:
        return Stage.NEW
    return Stage.LOYAL if tier_rank >= 2 else Stage.REPEAT


@dataclass(frozen=True)
class NextTier:
    name: str
    spend_needed: Decimal


@dataclass(frozen=True)
class TierStatus:
    name: str
    since: datetime
    review_at: datetime | None
    qualifying_spend: Decimal
    next: NextTier | None
    spend_to_keep: Decimal


@dataclass(frozen=True)
class PointsStatus:
    available: int
    pending: int
    lifetime_earned: int
    clawed_back: int
    redeemed: int
    expired: int
    pending_lots: list[PendingPoints]


@dataclass(frozen=True)
class MemberStatus:
    member_id: str
    personal: PersonalData  # sealed: the API opens it with the member's key
    enrolled_at: datetime
    stage: Stage
    tier: TierStatus
    points: PointsStatus
    referral_code: str
    as_of: datetime
    currency: str

    def holding(self) -> Holding:
        points = self.points
        return Holding(self.tier.name, self.stage.value, points.available, points.pending)


def answer(member: Member, as_of: datetime, rules: ProgramRules) -> MemberStatus:
    """The status of a member whose due changes up to ``as_of`` are recorded."""
    at = max(as_of, member.business_time)
    standing = member.standing
    spend = tiers.qualifying_spend(member.spend, at, rules)
    above = rules.tier_above(standing.tier)
    pending = member.lots.pending_lots()
    return MemberStatus(
        member_id=member.member_id,
        personal=member.personal,
        enrolled_at=member.enrolled_at,
        stage=stage(
            len(member.purchases),
            member.last_purchase_at,
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
            spend_to_keep=tiers.spend_to_keep(standing, member.spend, at, rules),
        ),
        points=PointsStatus(
            available=member.available_points(),
            pending=sum(lot.points for lot in pending),
            lifetime_earned=member.lifetime_earned,
            clawed_back=member.clawed_back,
            redeemed=member.redeemed,
            expired=member.expired,
            pending_lots=sorted(pending, key=lambda lot: lot.available_at),
        ),
        referral_code=member.referral_code,
        as_of=as_of,
        currency=rules.currency,
    )


def changes_at(member: Member, at: datetime, rules: ProgramRules) -> datetime | None:
    """The first instant after ``at`` from which, with no new event, the status of a member
    (whose due changes up to ``at`` are recorded) may read differently (beyond ``as_of``); None
    if it never will.

    A read model stores the status of ``at`` with this instant, and serves it until then. The
    status moves with time only through: changes falling due (lots, reviews, referral rewards;
    not notices, which change nothing it shows), the lifecycle stage's idle thresholds, and
    purchases leaving the trailing tier window (no purchase takes effect after the member's
    business time, so none enters it).
    """
    candidates: list[datetime] = []
    if member.business_time > at:
        candidates.append(member.business_time)
    due = member.next_change_at()
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


def value_facts(member: Member) -> value.MemberFacts:
    """What the member brought and cost: purchases, refunds (a claim's own refund counted inside
    its payout), payouts, points redeemed. The ledger and the read models both use this one."""
    facts = value.MemberFacts(member.member_id, member.enrolled_at)
    for purchase in member.purchases.values():
        facts.add_purchase(purchase.occurred_at, purchase.amount)
        facts.refunds += purchase.refunded
        if purchase.claim is not None:
            facts.refunds -= purchase.claim.unrefunded
            facts.guarantee_payouts += purchase.claim.payout
    facts.points_redeemed = member.redeemed
    return facts
