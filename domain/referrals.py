"""Referrals: a code shared by a member, a friend who enrols with it, rewards for both.

A referral touches two members' ledgers, so each step here changes the referee and the referrer
together; the Ledger saves both in one transaction, which is what makes the cap hold under
concurrency (the referrer's version number serialises its qualifications).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.errors import RuleViolation
from domain.members import CROCKFORD, Member, Terms
from domain.program import ProgramRules

# Crockford base32 reads the easily confused letters as digits.
CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


class UnknownReferralCode(RuleViolation):
    def __init__(self, code: str) -> None:
        super().__init__(f"no member has the referral code {code!r}", "referral_code")


class SelfReferral(RuleViolation):
    def __init__(self) -> None:
        super().__init__("a member cannot be referred with their own code", "referral_code")


def normalise_email(email: str) -> str:
    """Lower-cased, with any +tag removed from the local part."""
    local, _, domain = email.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def normalise_code(code: str) -> str | None:
    """The canonical form of a code as a person may type it, or None if it cannot be one."""
    canonical = code.strip().upper().replace("-", "").replace(" ", "").translate(CONFUSABLE)
    if len(canonical) != 8 or any(ch not in CROCKFORD for ch in canonical):
        return None
    return canonical


def referral_terms(rules: ProgramRules) -> dict[str, Any]:
    """The terms a referral keeps for life: those in force when it was registered."""
    terms = rules.referrals
    return {
        "referrer_points": terms.referrer_points,
        "referee_points": terms.referee_points,
        "qualifying_amount": str(terms.qualifying_amount),
        "cap": terms.cap,
        "cap_days": terms.cap_days,
    }


def register(
    referrer: Member,
    referee: Member,
    code: str,
    terms: Terms,
    recorded_at: datetime,
    cause: str,
) -> None:
    """The friend enrols with the code: recorded in both ledgers, as ``registered``."""
    if normalise_email(referrer.email) == normalise_email(referee.email):
        raise SelfReferral()
    agreed = referral_terms(terms.rules)
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
    if referral is None or referral["state"] not in ("registered", "qualified"):
        return None
    if referral["state"] == "qualified":
        purchase = referee.purchases[referral["order_id"]]
        if referee.business_time >= purchase["available_at"]:
            return None  # the window has passed: the reward stands whatever comes next
    return str(referral["referrer_id"])


def after_purchase(
    referee: Member,
    referrer: Member,
    order_id: str,
    terms: Terms,
    recorded_at: datetime,
    cause: str,
) -> None:
    """The referee's first purchase of at least the threshold qualifies the referral."""
    referral = referee.referral
    if referral is None or referral["state"] != "registered":
        return
    agreed = referral["terms"]
    purchase = referee.purchases[order_id]
    if purchase["amount"] < Decimal(agreed["qualifying_amount"]):
        return
    at = referrer.effective_time(purchase["at"])
    referrer.record_due(at, terms, cause, recorded_at)
    common = {"at": at, "cause": cause, "program_version": terms.version, "timestamp": recorded_at}
    window_start = at - timedelta(days=agreed["cap_days"])
    rewarded = sum(
        1
        for r in referrer.referrals.values()
        if r["state"] in ("qualified", "rewarded") and r["qualified_at"] > window_start
    )
    if rewarded >= agreed["cap"]:
        referrer.trigger_event(
            Member.ReferralCapped, referee_id=referee.member_id, order_id=order_id, **common
        )
        referee.trigger_event(
            Member.RefereeReferralCapped,
            referrer_id=referrer.member_id,
            order_id=order_id,
            **{**common, "at": purchase["at"]},
        )
        return
    reward_at: datetime = purchase["available_at"]
    expires_at = reward_at + timedelta(days=terms.rules.lot_lifetime_days)
    referrer_points = int(agreed["referrer_points"])
    referee_points = int(agreed["referee_points"])
    referrer.trigger_event(
        Member.ReferralQualified,
        referee_id=referee.member_id,
        order_id=order_id,
        points=referrer_points,
        lot=len(referrer.lots) if referrer_points > 0 else None,
        reward_at=reward_at,
        expires_at=expires_at,
        **common,
    )
    referee.trigger_event(
        Member.RefereeRewardPending,
        referrer_id=referrer.member_id,
        order_id=order_id,
        points=referee_points,
        lot=len(referee.lots) if referee_points > 0 else None,
        available_at=reward_at,
        expires_at=expires_at,
        **{**common, "at": purchase["at"]},
    )


def after_refund(
    referee: Member,
    referrer: Member,
    order_id: str,
    refund_id: str,
    terms: Terms,
    recorded_at: datetime,
    cause: str,
) -> None:
    """A refund inside the window that leaves the qualifying purchase under the threshold
    voids the referral and takes both pending rewards back; after the window they stand."""
    referral = referee.referral
    if referral is None or referral["state"] != "qualified" or referral["order_id"] != order_id:
        return
    purchase = referee.purchases[order_id]
    refund_at: datetime = purchase["refunds"][refund_id]["at"]
    at = referrer.effective_time(refund_at)
    referrer.record_due(at, terms, cause, recorded_at)
    made = referrer.referrals[referee.member_id]
    if made["state"] != "qualified" or refund_at >= made["reward_at"]:
        return
    if purchase["amount"] - purchase["refunded"] >= Decimal(referral["terms"]["qualifying_amount"]):
        return
    common = {"cause": cause, "program_version": terms.version, "timestamp": recorded_at}
    points = referrer.lots[made["lot"]]["points"] if made["lot"] is not None else 0
    taken, debt = referrer.plan_clawback(made["lot"], points)
    referrer.trigger_event(
        Member.ReferralVoided,
        at=at,
        referee_id=referee.member_id,
        refund_id=refund_id,
        points_clawed_back=points,
        taken=taken,
        debt=debt,
        **common,
    )
    own_lot = referral["lot"]
    points = referee.lots[own_lot]["points"] if own_lot is not None else 0
    taken, debt = referee.plan_clawback(own_lot, points)
    referee.trigger_event(
        Member.RefereeRewardVoided,
        at=refund_at,
        referrer_id=referrer.member_id,
        refund_id=refund_id,
        points_clawed_back=points,
        taken=taken,
        debt=debt,
        **common,
    )


def referral_view(referral: dict[str, Any], referrer_id: str) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    terms = referral["terms"]
    rewarded = referral["state"] in ("qualified", "rewarded")
    return {
        "referee_id": referral["referee_id"],
        "referrer_id": referrer_id,
        "code": referral["code"],
        "state": referral["state"],
        "registered_at": iso(referral["registered_at"]),
        "qualified_at": iso(referral["qualified_at"]),
        "rewarded_at": iso(referral["rewarded_at"]),
        "voided_at": iso(referral["voided_at"]),
        "capped_at": iso(referral["capped_at"]),
        "qualifying_order_id": referral["order_id"],
        "reward_available_at": iso(referral["reward_at"]),
        "referrer_points": terms["referrer_points"] if rewarded else 0,
        "referee_points": terms["referee_points"] if rewarded else 0,
        "terms": terms,
        "causes": referral["causes"],
    }
