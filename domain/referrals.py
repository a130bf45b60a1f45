"""Referrals: a code shared by a member, a friend who enrols with it, rewards for both.

A referral touches two members' ledgers, so each step here changes the referee and the referrer
together; the Ledger saves both in one transaction, which is what makes the cap hold under
concurrency (the referrer's version number serialises its qualifications).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.actors import Cause
from domain.members import CROCKFORD, AgreedTerms, Member, ReferralState, Terms
from domain.members.referrals import EARNING, OPEN

# Crockford base32 reads the easily confused letters as digits.
CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def normalise_code(code: str) -> str | None:
    """The canonical form of a code as a person may type it, or None if it cannot be one."""
    canonical = code.strip().upper().replace("-", "").replace(" ", "").translate(CONFUSABLE)
    if len(canonical) != 8 or any(ch not in CROCKFORD for ch in canonical):
        return None
    return canonical


def register(
    referrer: Member,
    referee: Member,
    code: str,
    terms: Terms,
    recorded_at: datetime,
    cause: Cause,
) -> None:
    """The friend enrols with the code: recorded in both ledgers, as ``registered`` (the
    Ledger has refused a friend with the referrer's own email before this)."""
    agreed = AgreedTerms.of(terms.rules).to_dict()
    common = {"cause": cause, "program_version": terms.version, "timestamp": recorded_at}
    referee.trigger_event(
        Member.ReferredBy,
        at=referee.business_time,
        referrer_id=referrer.member_id,
        code=code,
        terms=agreed,
        **common,
    )
    at = referrer.effective_time(referee.business_time)
    referrer.record_due(at, terms, cause, recorded_at)
    referrer.trigger_event(
        Member.ReferralRegistered,
        at=referrer.effective_time(at),
        referee_id=referee.member_id,
        code=code,
        terms=agreed,
        **common,
    )


def open_referrer(referee: Member) -> str | None:
    """The referrer whose ledger the referee's next purchase or refund may change."""
    referral = referee.referral
    if referral is None or referral.state not in OPEN:
        return None
    if referral.state is ReferralState.QUALIFIED:
        assert referral.order_id is not None
        purchase = referee.purchases[referral.order_id]
        if referee.business_time >= purchase.available_at:
            return None  # the window has passed: the reward stands whatever comes next
    return referral.referrer_id


def after_purchase(
    referee: Member,
    referrer: Member,
    order_id: str,
    terms: Terms,
    recorded_at: datetime,
    cause: Cause,
) -> None:
    """The referee's first purchase of at least the threshold qualifies the referral."""
    referral = referee.referral
    if referral is None or referral.state is not ReferralState.REGISTERED:
        return
    agreed = referral.terms
    purchase = referee.purchases[order_id]
    if purchase.amount < agreed.qualifying_amount:
        return
    at = referrer.effective_time(purchase.at)
    referrer.record_due(at, terms, cause, recorded_at)
    common = {"at": at, "cause": cause, "program_version": terms.version, "timestamp": recorded_at}
    window_start = at - timedelta(days=agreed.cap_days)
    rewarded = sum(
        1
        for r in referrer.referrals.values()
        if r.state in EARNING and r.qualified_at is not None and r.qualified_at > window_start
    )
    if rewarded >= agreed.cap:
        referrer.trigger_event(
            Member.ReferralCapped, referee_id=referee.member_id, order_id=order_id, **common
        )
        referee.trigger_event(
            Member.RefereeReferralCapped,
            referrer_id=referrer.member_id,
            order_id=order_id,
            **{**common, "at": purchase.at},
        )
        return
    reward_at = purchase.available_at
    expires_at = reward_at + timedelta(days=terms.rules.lot_lifetime_days)
    referrer.trigger_event(
        Member.ReferralQualified,
        referee_id=referee.member_id,
        order_id=order_id,
        points=agreed.referrer_points,
        reward_at=reward_at,
        expires_at=expires_at,
        **common,
    )
    referee.trigger_event(
        Member.RefereeRewardPending,
        referrer_id=referrer.member_id,
        order_id=order_id,
        points=agreed.referee_points,
        available_at=reward_at,
        expires_at=expires_at,
        **{**common, "at": purchase.at},
    )


def after_refund(
    referee: Member,
    referrer: Member,
    order_id: str,
    refund_id: str,
    terms: Terms,
    recorded_at: datetime,
    cause: Cause,
) -> None:
    """A refund inside the window that leaves the qualifying purchase under the threshold
    voids the referral and takes both pending rewards back; after the window they stand."""
    referral = referee.referral
    if (
        referral is None
        or referral.state is not ReferralState.QUALIFIED
        or referral.order_id != order_id
    ):
        return
    purchase = referee.purchases[order_id]
    refund_at = purchase.refunds[refund_id].at
    at = referrer.effective_time(refund_at)
    referrer.record_due(at, terms, cause, recorded_at)
    made = referrer.referrals[referee.member_id]
    if made.state is not ReferralState.QUALIFIED or (
        made.reward_at is not None and refund_at >= made.reward_at
    ):
        return
    if purchase.refundable >= referral.terms.qualifying_amount:
        return
    common = {"cause": cause, "program_version": terms.version, "timestamp": recorded_at}
    take_back_reward(
        referrer, made.lot_id, Member.ReferralVoided, at=at, referee_id=referee.member_id,
        refund_id=refund_id, **common,
    )  # fmt: skip
    take_back_reward(
        referee, referral.lot_id, Member.RefereeRewardVoided, at=refund_at,
        referrer_id=referrer.member_id, refund_id=refund_id, **common,
    )  # fmt: skip


def take_back_reward(member: Member, lot_id: str, event_class: Any, **data: Any) -> None:
    """A voided reward: all the points its lot was opened with, from that lot first."""
    points = member.lot_points(lot_id)
    taken, debt = member.lots.plan_clawback(lot_id, points)
    member.trigger_event(event_class, points_clawed_back=points, taken=taken, debt=debt, **data)
