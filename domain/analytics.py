"""The analytics summary, as pure functions of what the ledger or the read models hold.

Every member contributes a few counters to the summary (``contribution``): one to its tier
and its stage, its points, a count per referral step reached, and per guarantee policy its
guaranteed purchases, open ones and what they could cost. The summary is those counters summed
(``from_totals``). The ledger sums them over every member it folds (any instant); the read
models keep the sums up to date, adding to them what each written row changes, so a summary
read there is one row per counter, whatever the number of members. One rule, both paths.

Money is counted in millionths of the currency (``MONEY_SCALE``): integers, so sums stay exact
in either database.
"""

from __future__ import annotations

from collections import Counter
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
MONEY_SCALE = 10**6
GUARANTEE = "guarantee:"
POLICY_COUNTS = ("guaranteed_purchases", "open", "claims")
POLICY_MONEY = ("max_payout", "payouts")


@dataclass(frozen=True)
class Promise:
    """A guaranteed purchase: its policy, what is left of it, and the payout if claimed."""

    policy: str
    refund_percent: int
    expires_at: datetime
    amount: Decimal
    refunded: Decimal
    payout: Decimal | None

    def is_open(self, moment: datetime) -> bool:
        return self.payout is None and self.expires_at > moment and self.amount > self.refunded


@dataclass(frozen=True)
class Holding:
    """What a member's status adds to the summary: its tier, stage and points."""

    tier: str
    stage: str
    available: int
    pending: int


def scaled(amount: Decimal) -> int:
    """An amount in millionths (amounts have at most the currency's minor-unit precision)."""
    return int((amount * MONEY_SCALE).to_integral_value())


def unscaled(count: int) -> Decimal:
    return Decimal(count).scaleb(-6)


def contribution(
    holding: Holding,
    promises: Iterable[Promise],
    referral_steps: Iterable[Iterable[str]],
    moment: datetime,
    currency: str,
) -> dict[str, int]:
    """The counters one member adds to the summary as of ``moment`` (zeros left out)."""
    figures: Counter[str] = Counter(
        {
            "members": 1,
            f"tier:{holding.tier}": 1,
            f"stage:{holding.stage}": 1,
            "points:available": holding.available,
            "points:pending": holding.pending,
        }
    )
    for steps in referral_steps:
        figures["funnel:registered"] += 1
        for step in steps:
            figures[f"funnel:{step}"] += 1
    for promise in promises:
        policy = f"{GUARANTEE}{promise.policy}:"
        figures[f"{policy}guaranteed_purchases"] += 1
        if promise.payout is not None:
            figures[f"{policy}claims"] += 1
            figures[f"{policy}payouts"] += scaled(promise.payout)
        elif promise.is_open(moment):
            left = promise.amount - promise.refunded
            payout = half_even(left * Decimal(promise.refund_percent) / 100, currency)
            figures[f"{policy}open"] += 1
            figures[f"{policy}max_payout"] += scaled(payout)
    return {key: count for key, count in figures.items() if count}


def window_closes_at(promises: Iterable[Promise], moment: datetime) -> datetime | None:
    """The first instant after ``moment`` at which an open guarantee's window closes."""
    closing = [p.expires_at for p in promises if p.is_open(moment)]
    return min(closing) if closing else None


def add(totals: Counter[str], figures: Mapping[str, int], sign: int = 1) -> None:
    for key, count in figures.items():
        totals[key] += sign * count


def difference(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
    """What replacing ``old`` by ``new`` adds to the totals (zeros left out)."""
    changed: Counter[str] = Counter(new)
    add(changed, old, -1)
    return {key: count for key, count in changed.items() if count}


def from_totals(totals: Mapping[str, int], moment: datetime, rules: ProgramRules) -> dict[str, Any]:
    """The summary from the summed counters."""
    currency = rules.currency
    by_tier = {tier.name: 0 for tier in rules.tiers}
    by_stage = dict.fromkeys(STAGES, 0)
    funnel = dict.fromkeys(FUNNEL, 0)
    policies: dict[str, dict[str, int]] = {}
    for key, count in sorted(totals.items()):
        if key.startswith("tier:") and count:
            by_tier[key[5:]] = count
        elif key.startswith("stage:"):
            by_stage[key[6:]] = count
        elif key.startswith("funnel:"):
            funnel[key[7:]] = count
        elif key.startswith(GUARANTEE):
            policy, name = key[len(GUARANTEE) :].rsplit(":", 1)
            policies.setdefault(policy, {})[name] = count
    by_policy = {
        policy: policy_figures(found, currency)
        for policy, found in sorted(policies.items())
        if found.get("guaranteed_purchases", 0)
    }
    whole = {
        name: sum(found.get(name, 0) for found in policies.values() if found)
        for name in POLICY_COUNTS + POLICY_MONEY
    }
    return {
        "as_of": moment.isoformat(),
        "currency": currency,
        "members": {"total": totals.get("members", 0), "by_tier": by_tier, "by_stage": by_stage},
        "points_outstanding": {
            "available": totals.get("points:available", 0),
            "pending": totals.get("points:pending", 0),
        },
        "guarantees": {**policy_figures(whole, currency), "by_policy": by_policy},
        "referrals": referral_funnel(funnel),
    }


def policy_figures(found: Mapping[str, int], currency: str) -> dict[str, Any]:
    counts = {name: found.get(name, 0) for name in POLICY_COUNTS}
    return {
        **counts,
        "max_payout": format_money(unscaled(found.get("max_payout", 0)), currency),
        "payouts": format_money(unscaled(found.get("payouts", 0)), currency),
        "claim_rate": rate(counts["claims"], counts["guaranteed_purchases"]),
    }


def referral_funnel(counts: Mapping[str, int]) -> dict[str, Any]:
    """How many referrals reached each step, and the rates between them."""
    funnel = {step: counts.get(step, 0) for step in FUNNEL}
    return {
        **funnel,
        "qualification_rate": rate(funnel["qualified"] + funnel["capped"], funnel["registered"]),
        "reward_rate": rate(funnel["rewarded"], funnel["qualified"]),
    }


def summary(
    moment: datetime,
    rules: ProgramRules,
    members: Iterable[tuple[Holding, Iterable[Promise], Iterable[Iterable[str]]]],
) -> dict[str, Any]:
    """The summary of ``members``: each its holding, its promises and its referrals' steps."""
    totals: Counter[str] = Counter()
    for holding, promises, steps in members:
        add(totals, contribution(holding, promises, steps, moment, rules.currency))
    return from_totals(totals, moment, rules)


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
