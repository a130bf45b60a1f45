"""The effect of a follow-up plan version: treated against holdout.

For each group: members entered, the share that reached the plan's goal (conversion) and the
revenue per member inside the goal window. The uplift is the treated conversion minus the
holdout's, with a 95% confidence interval by Newcombe's hybrid score method (method 10 of
Newcombe, "Interval estimation for the difference between independent proportions", Statistics
in Medicine 17, 1998): each group's Wilson score interval, combined. A holdout of 10% is small,
and the simple Wald interval (p1 - p2 +- 1.96 x its standard error) is too narrow and can leave
[-1, 1] at small counts; the Wilson-based interval keeps its coverage there. The Wald interval
is given beside it for readers who compute that one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

Z95 = 1.959963984540054  # the normal quantile of 0.975


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return Interval(0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """The 95% interval of p1 - p2 (None if either group is empty)."""
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    one, two = wilson(x1, n1, z), wilson(x2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - one.low) ** 2 + (two.high - p2) ** 2)
    high = difference + math.sqrt((one.high - p1) ** 2 + (p2 - two.low) ** 2)
    return Interval(low, high)


def wald(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    half = z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return Interval(p1 - p2 - half, p1 - p2 + half)


@dataclass(frozen=True)
class Group:
    members: int
    converted: int
    revenue: Decimal

    @property
    def conversion(self) -> float | None:
        return None if self.members == 0 else self.converted / self.members

    @property
    def revenue_per_member(self) -> Decimal | None:
        if self.members == 0:
            return None
        return (self.revenue / self.members).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Uplift:
    conversion: float | None  # treated minus holdout
    interval: Interval | None  # Newcombe hybrid score, 95%
    wald: Interval | None
    revenue_per_member: Decimal | None


def uplift(treated: Group, holdout: Group) -> Uplift:
    t, h = treated.conversion, holdout.conversion
    revenue = None
    if treated.revenue_per_member is not None and holdout.revenue_per_member is not None:
        revenue = treated.revenue_per_member - holdout.revenue_per_member
    return Uplift(
        None if t is None or h is None else t - h,
        newcombe(treated.converted, treated.members, holdout.converted, holdout.members),
        wald(treated.converted, treated.members, holdout.converted, holdout.members),
        revenue,
    )
