"""The member's ledger: a package with a module per concept, and the aggregate that uses them.

member       the Member aggregate: its events and the commands that decide them
lots         point lots: FIFO spending, maturing, expiry, clawback and debt
tiers        tier standing: trailing spend, upgrades, grace, reviews, refund downgrades
purchases    purchases, refunds and guarantee claims, and the points they earn
redemptions  points spent on rewards, and given back on cancellation
referrals    the member's side of referrals: friends referred, the code it enrolled with
status       the status a member answers: tier, points, lifecycle stage
ownership    which member an order, a redemption or a referral code belongs to
"""

from domain.members.lots import DueKind, Lot, LotStatus, PendingPoints, PointLots
from domain.members.member import CROCKFORD, Member, member_uuid, referral_code_for
from domain.members.ownership import Ownership
from domain.members.purchases import (
    Claim,
    GuaranteeTerms,
    LineItem,
    Purchase,
    Refund,
    check_same,
)
from domain.members.redemptions import Redemption
from domain.members.referrals import (
    AgreedTerms,
    MadeReferral,
    ReceivedReferral,
    ReferralState,
)
from domain.members.status import MemberStatus, NextTier, PointsStatus, Stage, TierStatus
from domain.program import Terms

__all__ = [
    "CROCKFORD",
    "AgreedTerms",
    "Claim",
    "DueKind",
    "GuaranteeTerms",
    "LineItem",
    "Lot",
    "LotStatus",
    "MadeReferral",
    "Member",
    "MemberStatus",
    "NextTier",
    "Ownership",
    "PendingPoints",
    "PointLots",
    "PointsStatus",
    "Purchase",
    "ReceivedReferral",
    "Redemption",
    "ReferralState",
    "Refund",
    "Stage",
    "Terms",
    "TierStatus",
    "check_same",
    "member_uuid",
    "referral_code_for",
]
