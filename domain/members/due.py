"""What falls due with time alone: lots maturing and expiring, tier reviews, referral rewards.

A command records whatever is due by its own time first, as a scheduler run just before it
would have, so no outcome depends on when the scheduler last ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.actors import Cause
from domain.members import tiers
from domain.members.lots import DueKind
from domain.program import Terms

if TYPE_CHECKING:
    from domain.members.member import Member


@dataclass(frozen=True, order=True)
class Due:
    when: datetime
    kind: DueKind
    seq: int  # orders changes of one kind due at the same instant
    key: str  # the lot, or the referee whose reward it is


def next_due(member: Member) -> Due | None:
    """The earliest change due."""
    found = member.lots.next_due()
    best = None if found is None else Due(*found)
    review_at = member.standing.review_at
    if review_at is not None:
        review = Due(review_at, DueKind.TIER_REVIEW, -1, "")
        if best is None or review < best:
            best = review
    for referee_id in member.qualified_referrals:
        referral = member.referrals[referee_id]
        assert referral.reward_at is not None
        reward = Due(referral.reward_at, DueKind.REFERRAL_REWARD, referral.seq, referee_id)
        if best is None or reward < best:
            best = reward
    return best


def record(
    member: Member, until: datetime, terms: Terms, cause: Cause, recorded_at: datetime
) -> int:
    """Record, in time order, every change due by ``until``; how many were."""
    count = 0
    while (found := next_due(member)) is not None and found.when <= until:
        when = max(found.when, member.business_time)
        stamp = {
            "at": when,
            "cause": cause,
            "program_version": terms.version,
            "timestamp": recorded_at,
        }
        if found.kind is DueKind.LOT_MATURES:
            points = member.lots[found.key].remaining
            member.trigger_event(
                member.PointsBecameAvailable, lot=found.key, points=points, **stamp
            )
        elif found.kind is DueKind.LOT_EXPIRES:
            points = member.lots[found.key].remaining
            member.trigger_event(member.PointsExpired, lot=found.key, points=points, **stamp)
        elif found.kind is DueKind.TIER_REVIEW:
            review_tier(member, when, terms, stamp)
        else:
            member.trigger_event(member.ReferralRewarded, referee_id=found.key, **stamp)
        count += 1
    return count


def review_tier(member: Member, when: datetime, terms: Terms, stamp: dict[str, object]) -> None:
    rules = terms.rules
    next_review = when + timedelta(days=rules.tier_period_days)
    lower = tiers.review(member.standing, member.spend, when, rules)
    if lower is None:
        member.trigger_event(
            member.TierRetained, tier=member.standing.tier, review_at=next_review, **stamp
        )
        return
    member.trigger_event(
        member.TierDowngraded,
        from_tier=member.standing.tier,
        to_tier=lower.name,
        reason="review",
        since=when,
        review_at=next_review if rules.tier_rank(lower.name) > 0 else None,
        **stamp,
    )
