"""Customer value: net contribution, value classes, the Pareto share and RFM scores.

Pure functions over per-member facts as of one instant; the ledger folds the facts from events.

Definitions (PROGRAM.md, "Customer value"):

- Net contribution = purchases - refunds - guarantee payouts - points redeemed x point value.
  A guarantee claim records the refund of what was left of the order and its payout; the payout
  is the whole amount handed back, so that refund is counted once, inside the payout.
- Ranks are among the members with purchases only. A member's standing is the fraction of those
  members that are strictly better on a measure, so tied members share the better rank.
- Value class: standing < 1/4 -> A, < 2/4 -> B, < 3/4 -> C, otherwise D (with 8 members and no
  ties: 2 A, 2 B, 2 C, 2 D). A negative contribution is always D.
- RFM scores: 5 - floor(5 x standing), so the best fifth scores 5 and the worst fifth 1.
  Recency is whole days since the last purchase (fewer is better), frequency the number of
  purchases, monetary the net contribution.
- Pareto share: the top ceil(N / 5) of the N members with purchases, by net contribution,
  bring this share of the total net contribution, rounded half-even to 4 places; none when the
  total is not positive.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, TypeVar

from domain.money import format_money, half_even
from domain.program import ProgramRules

ZERO = Decimal("0")
DEFAULT_POINT_VALUE = Decimal("0.01")
CLASSES = ("A", "B", "C", "D")
DAY = timedelta(days=1)
K = TypeVar("K", int, Decimal)


@dataclass
class MemberFacts:
    """What one member brought and cost up to an instant: sums, not a list, so a read model
    can keep them in a row."""

    member_id: str
    enrolled_at: datetime
    purchases: int = 0
    bought: Decimal = ZERO
    last_purchase_at: datetime | None = None
    refunds: Decimal = ZERO
    guarantee_payouts: Decimal = ZERO
    points_redeemed: int = 0

    def add_purchase(self, occurred_at: datetime, amount: Decimal) -> None:
        self.purchases += 1
        self.bought += amount
        if self.last_purchase_at is None or occurred_at > self.last_purchase_at:
            self.last_purchase_at = occurred_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "enrolled_at": self.enrolled_at.isoformat(),
            "purchases": self.purchases,
            "bought": str(self.bought),
            "last_purchase_at": None
            if self.last_purchase_at is None
            else self.last_purchase_at.isoformat(),
            "refunds": str(self.refunds),
            "guarantee_payouts": str(self.guarantee_payouts),
            "points_redeemed": self.points_redeemed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberFacts:
        last = data["last_purchase_at"]
        return cls(
            member_id=data["member_id"],
            enrolled_at=datetime.fromisoformat(data["enrolled_at"]),
            purchases=data["purchases"],
            bought=Decimal(data["bought"]),
            last_purchase_at=None if last is None else datetime.fromisoformat(last),
            refunds=Decimal(data["refunds"]),
            guarantee_payouts=Decimal(data["guarantee_payouts"]),
            points_redeemed=data["points_redeemed"],
        )


def net_contribution(facts: MemberFacts, point_value: Decimal = DEFAULT_POINT_VALUE) -> Decimal:
    redeemed = Decimal(facts.points_redeemed) * point_value
    return facts.bought - facts.refunds - facts.guarantee_payouts - redeemed


def standings(values: Sequence[K], higher_is_better: bool = True) -> list[Fraction]:
    """For each value, the fraction of all the values that are strictly better than it."""
    ordered = sorted(values)
    count = len(ordered)
    if higher_is_better:
        return [Fraction(count - bisect.bisect_right(ordered, v), count) for v in values]
    return [Fraction(bisect.bisect_left(ordered, v), count) for v in values]


def value_classes(contributions: Sequence[Decimal]) -> list[str]:
    """A-D by quartile of standing; a negative contribution is always D."""
    return [
        class_at(amount, standing)
        for amount, standing in zip(contributions, standings(contributions), strict=True)
    ]


def class_at(amount: Decimal, standing: Fraction) -> str:
    return "D" if amount < 0 else CLASSES[min(math.floor(4 * standing), 3)]


def value_class_of(amount: Decimal, better: int, count: int) -> str:
    """The class of one contribution that ``better`` of the ``count`` members beat."""
    return class_at(amount, Fraction(better, count))


def quintile_scores(values: Sequence[K], higher_is_better: bool = True) -> list[int]:
    """1-5 by quintile of standing: the best fifth scores 5."""
    return [5 - min(math.floor(5 * s), 4) for s in standings(values, higher_is_better)]


def pareto_share(contributions: Sequence[Decimal]) -> Decimal | None:
    """The share of the total net contribution that the top ceil(N / 5) members bring."""
    total = sum(contributions, ZERO)
    if not contributions or total <= 0:
        return None
    top = sorted(contributions, reverse=True)[: math.ceil(len(contributions) / 5)]
    return share(sum(top, ZERO), total)


def share(top: Decimal, total: Decimal) -> Decimal | None:
    """``top`` as a share of ``total``, to 4 places; none when the total is not positive."""
    if total <= 0:
        return None
    return (top / total).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def recency_days(facts: MemberFacts, as_of: datetime) -> int | None:
    if facts.last_purchase_at is None:
        return None
    return max((as_of - facts.last_purchase_at) // DAY, 0)


def average_order_value(facts: MemberFacts) -> Decimal | None:
    if not facts.purchases:
        return None
    return facts.bought / facts.purchases


def purchases_per_year(facts: MemberFacts, as_of: datetime) -> Decimal:
    """Purchases per 365 days of tenure, a tenure under a day counting as one day."""
    tenure_days = max((as_of - facts.enrolled_at) // DAY, 1)
    return (Decimal(facts.purchases) * 365 / tenure_days).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )


@dataclass(frozen=True)
class MemberValue:
    member_id: str
    net_contribution: Decimal
    value_class: str | None
    recency_days: int | None
    recency: int | None
    frequency: int | None
    monetary: int | None
    purchases: int
    average_order_value: Decimal | None
    purchases_per_year: Decimal


@dataclass(frozen=True)
class CustomerValue:
    members: list[MemberValue]  # buyers by net contribution, best first; then the others
    pareto_top20_share: Decimal | None
    members_with_purchases: int


def customer_value(
    facts: Sequence[MemberFacts], as_of: datetime, point_value: Decimal = DEFAULT_POINT_VALUE
) -> CustomerValue:
    """Every member's value as of an instant; classes and scores rank the buyers only."""
    buyers = [f for f in facts if f.purchases]
    contributions = [net_contribution(f, point_value) for f in buyers]
    recencies = [recency_days(f, as_of) or 0 for f in buyers]
    frequencies = [f.purchases for f in buyers]
    classes = value_classes(contributions)
    r_scores = quintile_scores(recencies, higher_is_better=False)
    f_scores = quintile_scores(frequencies)
    m_scores = quintile_scores(contributions)
    ranked: dict[str, MemberValue] = {}
    for i, f in enumerate(buyers):
        ranked[f.member_id] = MemberValue(
            member_id=f.member_id,
            net_contribution=contributions[i],
            value_class=classes[i],
            recency_days=recencies[i],
            recency=r_scores[i],
            frequency=f_scores[i],
            monetary=m_scores[i],
            purchases=frequencies[i],
            average_order_value=average_order_value(f),
            purchases_per_year=purchases_per_year(f, as_of),
        )
    for f in facts:
        if not f.purchases:
            ranked[f.member_id] = MemberValue(
                member_id=f.member_id,
                net_contribution=net_contribution(f, point_value),
                value_class=None,
                recency_days=None,
                recency=None,
                frequency=None,
                monetary=None,
                purchases=0,
                average_order_value=None,
                purchases_per_year=purchases_per_year(f, as_of),
            )
    members = sorted(
        ranked.values(), key=lambda v: (v.value_class is None, -v.net_contribution, v.member_id)
    )
    return CustomerValue(members, pareto_share(contributions), len(buyers))


def report(
    facts: Sequence[MemberFacts],
    moment: datetime,
    rules: ProgramRules,
    stage_of: Callable[[str], str],
    value_class: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """The customer-value page: every member ranked as of ``moment``, then ``value_class``
    kept and ``limit`` of them from the ``after``-th; ``stage_of`` gives a member's stage."""
    found = customer_value(facts, moment, rules.point_value)
    kept = [v for v in found.members if value_class in (None, v.value_class)]
    chosen = kept[after : after + limit]
    return page(chosen, moment, rules, stage_of, found.members_with_purchases,
                found.pareto_top20_share)  # fmt: skip


def ranked(
    facts: MemberFacts,
    as_of: datetime,
    point_value: Decimal,
    buyers: int,
    better: tuple[int, int, int] | None,
) -> MemberValue:
    """One member's value from how many of the ``buyers`` are strictly better than it by net
    contribution, recency and frequency (``better``; None for a member without purchases):
    the same figures ``customer_value`` gives, for a database that counts the ranks."""
    net = net_contribution(facts, point_value)
    if better is None or not facts.purchases:
        return MemberValue(facts.member_id, net, None, None, None, None, None, 0, None,
                           purchases_per_year(facts, as_of))  # fmt: skip
    by_net, by_recency, by_frequency = (Fraction(count, buyers) for count in better)

    def score(standing: Fraction) -> int:
        return 5 - min(math.floor(5 * standing), 4)

    return MemberValue(
        member_id=facts.member_id,
        net_contribution=net,
        value_class="D" if net < 0 else CLASSES[min(math.floor(4 * by_net), 3)],
        recency_days=recency_days(facts, as_of) or 0,
        recency=score(by_recency),
        frequency=score(by_frequency),
        monetary=score(by_net),
        purchases=facts.purchases,
        average_order_value=average_order_value(facts),
        purchases_per_year=purchases_per_year(facts, as_of),
    )


def page(
    chosen: Sequence[MemberValue],
    moment: datetime,
    rules: ProgramRules,
    stage_of: Callable[[str], str],
    members_with_purchases: int,
    pareto_top20_share: Decimal | None,
) -> dict[str, Any]:
    """The customer-value page of the ``chosen`` members."""
    currency = rules.currency

    def money(amount: Decimal | None) -> str | None:
        return None if amount is None else format_money(half_even(amount, currency), currency)

    return {
        "as_of": moment.isoformat(),
        "currency": currency,
        "members_with_purchases": members_with_purchases,
        "pareto_top20_share": pareto_top20_share,
        "members": [
            {
                "member_id": v.member_id,
                "stage": stage_of(v.member_id),
                "value_class": v.value_class,
                "net_contribution": money(v.net_contribution),
                "lifetime_value": money(v.net_contribution),
                "rfm": None
                if v.recency is None
                else {
                    "recency_days": v.recency_days,
                    "recency": v.recency,
                    "frequency": v.frequency,
                    "monetary": v.monetary,
                },
                "purchases": v.purchases,
                "average_order_value": money(v.average_order_value),
                "purchases_per_year": v.purchases_per_year,
            }
            for v in chosen
        ],
    }
