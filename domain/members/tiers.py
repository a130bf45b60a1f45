"""Tier standing: spend in the trailing period, upgrades, the grace until review, and reviews."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from domain.members.events import MemberEvent
from domain.money import ZERO
from domain.program import ProgramRules, TierRule

if TYPE_CHECKING:
    from domain.members.member import Member


@dataclass(frozen=True)
class Upgrade:
    """A step up, kept until the next review so a refund can undo it."""

    from_tier: str
    since: datetime  # when the member had reached the tier it left
    review_at: datetime | None  # the review it had then
    upgraded_at: datetime


class SpendHistory:
    """Net spend by effective time, as running totals, so any trailing window is two look-ups."""

    def __init__(self) -> None:
        self.times: list[datetime] = []
        self.totals: list[Decimal] = [ZERO]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def add(self, at: datetime, amount: Decimal) -> None:
        self.times.append(at)
        self.totals.append(self.totals[-1] + amount)

    def refund(self, seq: int, amount: Decimal) -> None:
        """The running totals after the ``seq``-th purchase all lose the refunded amount."""
        totals = self.totals
        for i in range(seq + 1, len(totals)):
            totals[i] -= amount

    def between(self, start: datetime, end: datetime) -> Decimal:
        """Net spend of the purchases effective in (start, end]."""
        first = bisect.bisect_right(self.times, start)
        last = bisect.bisect_right(self.times, end)
        if last <= first:
            return ZERO
        return self.totals[last] - self.totals[first]

    def first_leaving(self, at: datetime, period: timedelta) -> datetime | None:
        """When the oldest purchase still in the window ending at ``at`` leaves it."""
        leaving = bisect.bisect_right(self.times, at - period)
        return self.times[leaving] + period if leaving < len(self.times) else None


class TierStanding:
    """The member's tier, since when, its next review, and the upgrades a refund may undo."""

    def __init__(self, at: datetime) -> None:
        self.tier = "bronze"
        self.since = at
        self.review_at: datetime | None = None
        self.upgrades: list[Upgrade] = []

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def upgrade(self, to_tier: str, at: datetime, review_at: datetime) -> None:
        self.upgrades.append(Upgrade(self.tier, self.since, self.review_at, at))
        self.tier, self.since, self.review_at = to_tier, at, review_at

    def downgrade(
        self, to_tier: str, since: datetime, review_at: datetime | None, after_refund: bool
    ) -> None:
        if not after_refund:
            self.upgrades.clear()
        elif self.upgrades and self.upgrades[-1].from_tier == to_tier:
            self.upgrades.pop()
        # A refund that leaves part of a jump keeps the upgrade, so a later one can undo it.
        self.tier, self.since, self.review_at = to_tier, since, review_at

    def retain(self, review_at: datetime) -> None:
        self.upgrades.clear()
        self.review_at = review_at


def qualifying_spend(
    spend: SpendHistory, at: datetime, rules: ProgramRules, since: datetime | None = None
) -> Decimal:
    """Net spend of the purchases that took effect in the trailing period ending at ``at``."""
    start = since if since is not None else at - timedelta(days=rules.tier_period_days)
    return spend.between(start, at)


def reached_by_upgrade(
    standing: TierStanding, spend: SpendHistory, at: datetime, rules: ProgramRules
) -> TierRule | None:
    """The tier a purchase at ``at`` lifts the member to, if higher than the tier it has."""
    reached = rules.tier_for_spend(qualifying_spend(spend, at, rules))
    return reached if rules.tier_rank(reached.name) > rules.tier_rank(standing.tier) else None


def review(
    standing: TierStanding, spend: SpendHistory, when: datetime, rules: ProgramRules
) -> TierRule | None:
    """At a review: None if the tier is kept, else the tier one step below."""
    current = rules.tier(standing.tier)
    if rules.tier_for_spend(qualifying_spend(spend, when, rules)).threshold >= current.threshold:
        return None
    return rules.tier_below(standing.tier)


@dataclass(frozen=True)
class RefundDowngrade:
    to_tier: str
    since: datetime
    review_at: datetime | None


def after_refund(
    standing: TierStanding, spend: SpendHistory, at: datetime, rules: ProgramRules
) -> RefundDowngrade | None:
    """The next upgrade a refund undoes: its spend, net of refunds, no longer reaches the tier.

    The tier stands if the spend behind the upgrade (net of refunds; spend that has only aged out
    of the window since is covered by the grace) or today's still reaches it.
    """
    if not standing.upgrades:
        return None
    upgrade = standing.upgrades[-1]
    reached = max(
        rules.tier_for_spend(qualifying_spend(spend, upgrade.upgraded_at, rules)),
        rules.tier_for_spend(qualifying_spend(spend, at, rules)),
        key=lambda tier: rules.tier_rank(tier.name),
    )
    if rules.tier_rank(reached.name) >= rules.tier_rank(standing.tier):
        return None
    if rules.tier_rank(reached.name) > rules.tier_rank(upgrade.from_tier):
        period = timedelta(days=rules.tier_period_days)
        return RefundDowngrade(reached.name, at, at + period)
    return RefundDowngrade(upgrade.from_tier, upgrade.since, upgrade.review_at)


def spend_to_keep(
    standing: TierStanding, spend: SpendHistory, at: datetime, rules: ProgramRules
) -> Decimal:
    """What the member must still spend before the review to keep the tier."""
    if standing.review_at is None:
        return ZERO
    since = standing.review_at - timedelta(days=rules.tier_period_days)
    kept = qualifying_spend(spend, at, rules, since=since)
    return max(rules.tier(standing.tier).threshold - kept, ZERO)


# Events: each change runs again on every replay.


class TierUpgraded(MemberEvent):
    TOPIC = "domain.members:Member.TierUpgraded"
    from_tier: str
    to_tier: str
    review_at: datetime
    order_id: str

    def change(self, member: Member) -> None:
        member.standing.upgrade(self.to_tier, self.at, self.review_at)
        purchase = member.purchases[self.order_id]
        member.purchases[self.order_id] = replace(purchase, tier_after=self.to_tier)


class TierDowngraded(MemberEvent):
    TOPIC = "domain.members:Member.TierDowngraded"
    from_tier: str
    to_tier: str
    reason: str
    since: datetime
    review_at: datetime | None

    def change(self, member: Member) -> None:
        if member.last_refund is not None:
            order_id, refund_id = member.last_refund
            purchase = member.purchases[order_id]
            refund = purchase.refunds[refund_id]
            # Recorded by the refund's own command: what its response says the tier is.
            if (refund.at, refund.recorded_at) == (self.at, self.timestamp):
                member.purchases[order_id] = purchase.with_refund_tier(refund_id, self.to_tier)
        member.standing.downgrade(
            self.to_tier, self.since, self.review_at, after_refund=self.reason == "refund"
        )


class TierRetained(MemberEvent):
    TOPIC = "domain.members:Member.TierRetained"
    tier: str
    review_at: datetime

    def change(self, member: Member) -> None:
        member.standing.retain(self.review_at)
