"""The JSON shapes of the model as the API answers them (and the read models keep them).

Pure functions of the domain's values: money as strings in the program's currency, instants as
ISO 8601, and nothing the model does not hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.members import (
    MadeReferral,
    Member,
    MemberStatus,
    Purchase,
    Redemption,
)
from domain.members.followups import Followup
from domain.members.personal import Erasure, OpenedPersonalData, PersonalData, Sealer
from domain.members.referrals import EARNING as EARNING_STATES
from domain.money import format_money
from domain.plans import PlanVersion


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def status(found: MemberStatus) -> dict[str, Any]:
    currency = found.currency
    tier = found.tier
    points = found.points
    return {
        "member_id": found.member_id,
        "personal": sealed(found.personal),
        "enrolled_at": iso(found.enrolled_at),
        "stage": found.stage.value,
        "tier": {
            "name": tier.name,
            "since": iso(tier.since),
            "review_at": iso(tier.review_at),
            "qualifying_spend": format_money(tier.qualifying_spend, currency),
            "next": None
            if tier.next is None
            else {
                "name": tier.next.name,
                "spend_needed": format_money(tier.next.spend_needed, currency),
            },
            "spend_to_keep": format_money(tier.spend_to_keep, currency),
        },
        "points": {
            "available": points.available,
            "pending": points.pending,
            "lifetime_earned": points.lifetime_earned,
            "clawed_back": points.clawed_back,
            "redeemed": points.redeemed,
            "expired": points.expired,
            "pending_lots": [
                {"points": lot.points, "available_at": iso(lot.available_at)}
                for lot in points.pending_lots
            ],
        },
        "referral_code": found.referral_code,
        "as_of": iso(found.as_of),
    }


def sealed(held: PersonalData) -> dict[str, Any]:
    """The member's personal data as the read models keep it: sealed, or nothing."""
    return {"email": held.sealed_email, "name": held.sealed_name, "state": held.state}


def opened(body: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """A stored status as a caller reads it: the email and name opened with the member's key
    (``null`` once erased) and ``personal_data`` saying which."""
    answer = {k: v for k, v in body.items() if k != "personal"}
    held = body["personal"]
    email = name = None
    state = held["state"]
    if state == "held" and held["email"] is not None:
        member_id = body["member_id"]
        email = sealer.open(member_id, "email", held["email"])
        if email is None:  # the key is destroyed; the erasure event is on its way to the views
            state = "erased"
        elif held["name"] is not None:
            name = sealer.open(member_id, "name", held["name"])
    answer["email"], answer["name"], answer["personal_data"] = email, name, state
    return answer


def personal_data(
    member: Member,
    held: OpenedPersonalData,
    status_now: dict[str, Any],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything held about a member, for the member to see (a data-subject access request):
    the personal data opened, the status, every purchase, redemption and referral, and every
    event of the member's ledger."""
    received = member.referral
    made = [member.referrals[referee] for referee in member.referral_order]
    return {
        "member_id": member.member_id,
        "personal_data": held.state,
        "email": held.email,
        "name": held.name,
        "enrolled_at": iso(member.enrolled_at),
        "referral_code": member.referral_code,
        "referred_by": None
        if received is None
        else {"referrer_id": received.referrer_id, "code": received.code},
        "status": status_now,
        "purchases": [purchase(bought) for bought in member.purchases.values()],
        "redemptions": [redemption(found) for found in member.redemptions.values()],
        "referrals": referrals(member.member_id, made),
        "events": events,
    }


def erasure(receipt: Erasure) -> dict[str, Any]:
    return {
        "member_id": receipt.member_id,
        "personal_data": "erased",
        "erased": list(receipt.erased),
        "erased_at": iso(receipt.erased_at),
        "actor": receipt.actor,
    }


def purchase(bought: Purchase) -> dict[str, Any]:
    order_id, currency = bought.order_id, bought.currency
    guarantee = bought.guarantee
    refunds = sorted(bought.refunds.values(), key=lambda r: r.recorded_at)
    return {
        "order_id": order_id,
        "member_id": bought.member_id,
        "amount": format_money(bought.amount, currency),
        "currency": bought.currency,
        "occurred_at": iso(bought.occurred_at),
        "effective_at": iso(bought.at),
        "recorded_at": iso(bought.recorded_at),
        "program_version": bought.program_version,
        "items": bought.items,
        "points_awarded": bought.points,
        "bonus_points": bought.bonus,
        "points_clawed_back": bought.clawed,
        "points_available_at": iso(bought.available_at),
        "refunded_amount": format_money(bought.refunded, currency),
        "refundable_amount": format_money(bought.refundable, currency),
        "refunds": [refund(bought, r.refund_id) for r in refunds],
        "guarantee": None
        if guarantee is None
        else {
            "policy": guarantee.policy,
            "refund_percent": guarantee.refund_percent,
            "evidence_required": guarantee.evidence_required,
            "expires_at": iso(guarantee.expires_at),
        },
        "claim": None if bought.claim is None else claim(bought),
    }


def recorded_purchase(bought: Purchase) -> dict[str, Any]:
    """The 201 body of a purchase, the same when the purchase is posted again."""
    currency = bought.currency
    guarantee = bought.guarantee
    return {
        "order_id": bought.order_id,
        "member_id": bought.member_id,
        "amount": format_money(bought.amount, currency),
        "currency": bought.currency,
        "occurred_at": iso(bought.occurred_at),
        "recorded_at": iso(bought.recorded_at),
        "program_version": bought.program_version,
        "points_awarded": bought.points,
        "bonus_points": bought.bonus,
        "points_available_at": iso(bought.available_at),
        "tier": bought.tier_after,
        "tier_changed": bought.tier_after != bought.tier_before,
        "guarantee": None
        if guarantee is None
        else {
            "policy": guarantee.policy,
            "refund_percent": guarantee.refund_percent,
            "expires_at": iso(guarantee.expires_at),
        },
    }


def refund(bought: Purchase, refund_id: str) -> dict[str, Any]:
    found = bought.refunds[refund_id]
    currency = bought.currency
    return {
        "refund_id": refund_id,
        "order_id": bought.order_id,
        "amount": format_money(found.amount, currency),
        "reason": found.reason,
        "occurred_at": iso(found.occurred_at),
        "recorded_at": iso(found.recorded_at),
        "points_clawed_back": found.points_clawed_back,
    }


def recorded_refund(bought: Purchase, refund_id: str) -> dict[str, Any]:
    """What the refund left, the same whenever it is asked again."""
    found = bought.refunds[refund_id]
    currency = bought.currency
    return {
        **refund(bought, refund_id),
        "refunded_total": format_money(found.refunded_total, currency),
        "refundable_amount": format_money(bought.amount - found.refunded_total, currency),
        "tier": found.tier_after,
        "tier_changed": found.tier_after != found.tier_before,
    }


def claim(bought: Purchase) -> dict[str, Any]:
    found = bought.claim
    assert found is not None, f"order {bought.order_id!r} has no claim"
    currency = bought.currency
    return {
        "claim_id": found.claim_id,
        "order_id": bought.order_id,
        "member_id": bought.member_id,
        "policy": found.policy,
        "refund_percent": found.refund_percent,
        "evidence": found.evidence,
        "refunded_amount": format_money(found.unrefunded, currency),
        "payout": format_money(found.payout, currency),
        "currency": currency,
        "points_clawed_back": found.points_clawed_back,
        "claimed_at": iso(found.claimed_at),
        "recorded_at": iso(found.recorded_at),
        "tier": found.tier_after,
        "tier_changed": found.tier_after != found.tier_before,
    }


def redemption(found: Redemption) -> dict[str, Any]:
    """With the balance right after the redemption, or after its cancellation once cancelled."""
    return {
        "redemption_id": found.redemption_id,
        "member_id": found.member_id,
        "points": found.points,
        "reward": found.reward,
        "redeemed_at": iso(found.redeemed_at),
        "cancelled_at": iso(found.cancelled_at),
        "points_available": found.available_now,
    }


def referral(made: MadeReferral, referrer_id: str, seq: int) -> dict[str, Any]:
    terms = made.terms
    earning = made.state in EARNING_STATES
    return {
        "referee_id": made.referee_id,
        "referrer_id": referrer_id,
        "code": made.code,
        "state": made.state.value,
        "registered_at": iso(made.registered_at),
        "qualified_at": iso(made.qualified_at),
        "rewarded_at": iso(made.rewarded_at),
        "voided_at": iso(made.voided_at),
        "capped_at": iso(made.capped_at),
        "qualifying_order_id": made.order_id,
        "reward_available_at": iso(made.reward_at),
        "referrer_points": terms.referrer_points if earning else 0,
        "referee_points": terms.referee_points if earning else 0,
        "terms": terms.to_dict(),
        "causes": dict(made.causes),
        "seq": seq,
    }


def referrals(referrer_id: str, made: list[MadeReferral], after: int = 0) -> list[dict[str, Any]]:
    """A page of the referrals a member made, numbered from ``after`` + 1 in enrolment order."""
    return [referral(r, referrer_id, i) for i, r in enumerate(made, start=after + 1)]


def plan(name: str, history: list[PlanVersion]) -> dict[str, Any]:
    """A follow-up plan: the version in force (the last of ``history``) and every version."""
    current = history[-1]
    return {
        "name": name,
        "version": current.version,
        "published_at": iso(current.published_at),
        "plan": current.plan.to_dict(),
        "versions": [
            {"version": v.version, "published_at": iso(v.published_at), "plan": v.plan.to_dict()}
            for v in history
        ],
    }


def followup(found: Followup) -> dict[str, Any]:
    goal = found.goal
    return {
        "id": found.id,
        "plan": found.plan,
        "plan_version": found.plan_version,
        "group": found.group,
        "trigger": found.trigger,
        "trigger_at": iso(found.trigger_at),
        "started_at": iso(found.started_at),
        "state": found.state,
        "ended_at": iso(found.ended_at),
        "reason": found.reason,
        "goal": {
            "event": goal["event"],
            "within_days": goal["within_days"],
            "until": iso(goal["until"]),
        },
        "steps": [
            {
                "n": step.n,
                "due_at": iso(step.due_at),
                "channel": step.channel,
                "message_key": step.message_key,
                "state": step.state,
                "recorded_at": iso(step.recorded_at),
                "outcome": step.outcome,
                "detail": step.detail,
                "reported_at": iso(step.reported_at),
            }
            for step in found.steps
        ],
    }
