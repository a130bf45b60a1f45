"""The status a member answers: tier standing, points and lifecycle stage at an instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum

from domain.analytics import Holding
from domain.members.lots import PendingPoints


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
    email: str
    name: str | None
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
