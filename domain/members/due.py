"""What falls due with time alone: lots maturing and expiring, tier reviews, referral rewards;
the notices of lots about to expire and guarantee windows about to close; the member going
quiet (dormant); and the steps of its follow-ups.

A command records whatever is due by its own time first, as a scheduler run just before it
would have, so no outcome depends on when the scheduler last ran. A notice (and dormancy, and a
follow-up's step) changes nothing the member's status shows; it is recorded once, so that it
can be delivered like any other event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.actors import Cause
from domain.members import followups, tiers
from domain.members.lots import DueKind
from domain.program import ProgramRules, Terms

if TYPE_CHECKING:
    from domain.members.member import Member


@dataclass(frozen=True, order=True)
class Due:
    when: datetime
    kind: DueKind
    seq: int  # orders changes of one kind due at the same instant
    key: str  # the lot, or the referee whose reward it is


def next_change(member: Member) -> Due | None:
    """The earliest change due of what the member holds: a lot, a tier review, a reward."""
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


def next_notice(member: Member, rules: ProgramRules) -> Due | None:
    """The earliest notice due under ``rules``: a lot about to expire, a window about to close."""
    lot = member.lots.next_expiry_notice(rules.expiry_notice_days)
    best = None if lot is None else Due(*lot)
    found = member.open_guarantees.next_notice(member.purchases, rules.guarantee_notice_days)
    if found is not None:
        when, seq, order_id = found
        guarantee = Due(when, DueKind.GUARANTEE_EXPIRING, seq, order_id)
        if best is None or guarantee < best:
            best = guarantee
    quiet = followups.dormancy_due(member, rules.dormant_days)
    if quiet is not None:
        dormant = Due(quiet, DueKind.BECAME_DORMANT, 0, "")
        if best is None or dormant < best:
            best = dormant
    step = member.followups.next_due()
    if step is not None:
        when, seq, followup_id = step
        followup = Due(when, DueKind.FOLLOWUP_STEP, seq, followup_id)
        if best is None or followup < best:
            best = followup
    return best


def next_due(member: Member, rules: ProgramRules) -> Due | None:
    """The earliest change or notice due."""
    dues = [due for due in (next_change(member), next_notice(member, rules)) if due is not None]
    return min(dues) if dues else None


def record(
    member: Member, until: datetime, terms: Terms, cause: Cause, recorded_at: datetime
) -> int:
    """Record, in time order, every change due by ``until``; how many were."""
    count = 0
    while (found := next_due(member, terms.rules)) is not None and found.when <= until:
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
        elif found.kind is DueKind.REFERRAL_REWARD:
            member.trigger_event(member.ReferralRewarded, referee_id=found.key, **stamp)
        elif found.kind is DueKind.POINTS_EXPIRING:
            lot = member.lots[found.key]
            member.trigger_event(
                member.PointsExpiring,
                lot=lot.id,
                points=lot.remaining,
                expires_at=lot.expires_at,
                **stamp,
            )
        elif found.kind is DueKind.BECAME_DORMANT:
            assert member.last_purchase_at is not None
            member.trigger_event(
                member.BecameDormant, last_purchase_at=member.last_purchase_at, **stamp
            )
        elif found.kind is DueKind.FOLLOWUP_STEP:
            record_step(member, member.followups.by_id[found.key], stamp)
        else:
            purchase = member.purchases[found.key]
            assert purchase.guarantee is not None
            member.trigger_event(
                member.GuaranteeExpiring,
                order_id=purchase.order_id,
                policy=purchase.guarantee.policy,
                closes_at=purchase.guarantee.expires_at,
                **stamp,
            )
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


def record_step(member: Member, followup: followups.Followup, stamp: dict[str, object]) -> None:
    """The follow-up's next step: due (the shop is told) or, in the holdout group, withheld."""
    step = followup.steps[followup.recorded]
    common = {
        "followup": followup.id,
        "plan": followup.plan,
        "plan_version": followup.plan_version,
        "step": step.n,
        "due_at": step.due_at,
    }
    if followup.group == "holdout":
        member.trigger_event(member.FollowupStepWithheld, **common, **stamp)
    else:
        member.trigger_event(
            member.FollowupStepDue,
            channel=step.channel,
            message_key=step.message_key,
            **common,
            **stamp,
        )
