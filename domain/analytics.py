"""The analytics summary, as pure functions of what the ledger or the read models hold.

The ledger folds the inputs from its events (any instant); the read models hold them as rows
(now). Both hand them to these functions, so both give the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.money import format_money, half_even
from domain.program import ProgramRules

STAGES = ("prospect", "new", "repeat", "loyal", "dormant", "lost")
FUNNEL = ("registered", "qualified", "rewarded", "voided", "capped")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Promise:
    """A guaranteed purchase: its policy, what is left of it, and the payout if claimed."""

    policy: str
    refund_percent: int
    expires_at: datetime
    amount: Decimal
    refunded: Decimal
    payout: Decimal | None


@dataclass(frozen=True)
class Holding:
    """What a member's status adds to the summary: its tier, stage and points."""

    tier: str
    stage: str
    available: int
    pending: int


def members_figures(holdings: Iterable[Holding], rules: ProgramRules) -> dict[str, Any]:
    """Members by tier and lifecycle stage, and the points they hold (from member statuses)."""
    by_tier = {tier.name: 0 for tier in rules.tiers}
    by_stage = dict.fromkeys(STAGES, 0)
    available = pending = total = 0
    for holding in holdings:
        total += 1
        by_tier[holding.tier] = by_tier.get(holding.tier, 0) + 1
        by_stage[holding.stage] += 1
        available += holding.available
        pending += holding.pending
    return {
        "members": {"total": total, "by_tier": by_tier, "by_stage": by_stage},
        "points_outstanding": {"available": available, "pending": pending},
    }


def guarantee_figures(
    promises: Iterable[Promise], moment: datetime, currency: str
) -> dict[str, Any]:
    """Per policy: guaranteed purchases, open ones and what they could cost, claims, payouts."""
    policies: dict[str, dict[str, Any]] = {}
    for promise in promises:
        policy = policies.setdefault(
            promise.policy,
            {"guaranteed_purchases": 0, "open": 0, "max_payout": ZERO, "claims": 0,
             "payouts": ZERO},
        )  # fmt: skip
        policy["guaranteed_purchases"] += 1
        left = promise.amount - promise.refunded
        if promise.payout is not None:
            policy["claims"] += 1
            policy["payouts"] += promise.payout
        elif promise.expires_at > moment and left > 0:
            policy["open"] += 1
            policy["max_payout"] += half_even(
                left * Decimal(promise.refund_percent) / 100, currency
            )
    max_payout = sum((p["max_payout"] for p in policies.values()), ZERO)
    payouts = sum((p["payouts"] for p in policies.values()), ZERO)
    for policy in policies.values():
        policy["claim_rate"] = rate(policy["claims"], policy["guaranteed_purchases"])
        policy["max_payout"] = format_money(policy["max_payout"], currency)
        policy["payouts"] = format_money(policy["payouts"], currency)
    totals = {
        key: sum(p[key] for p in policies.values())
        for key in ("guaranteed_purchases", "open", "claims")
    }
    return {
        **totals,
        "max_payout": format_money(max_payout, currency),
        "payouts": format_money(payouts, currency),
        "claim_rate": rate(totals["claims"], totals["guaranteed_purchases"]),
        "by_policy": dict(sorted(policies.items())),
    }


def referral_funnel(counts: Mapping[str, int]) -> dict[str, Any]:
    """How many referrals reached each step, and the rates between them."""
    funnel = {step: counts.get(step, 0) for step in FUNNEL}
    return {
        **funnel,
        "qualification_rate": rate(funnel["qualified"] + funnel["capped"], funnel["registered"]),
        "reward_rate": rate(funnel["rewarded"], funnel["qualified"]),
    }


def funnel_counts(reached: Iterable[Iterable[str]]) -> dict[str, int]:
    """How many referrals reached each step, from the steps past ``registered`` each reached."""
    counts = dict.fromkeys(FUNNEL, 0)
    for steps in reached:
        counts["registered"] += 1
        for step in steps:
            counts[step] += 1
    return counts


def summary(
    moment: datetime,
    rules: ProgramRules,
    holdings: Iterable[Holding],
    promises: Iterable[Promise],
    funnel: Mapping[str, int],
) -> dict[str, Any]:
    return {
        "as_of": moment.isoformat(),
        "currency": rules.currency,
        **members_figures(holdings, rules),
        "guarantees": guarantee_figures(promises, moment, rules.currency),
        "referrals": referral_funnel(funnel),
    }


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
