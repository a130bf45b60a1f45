"""Who enters a follow-up plan, decided from the log alone: the follow-up process's rules.

The process (``adapters/followup_process.py``) reads every member event in log order and keeps,
for each member, the few facts an audience is judged by (``Profile``) and every member's net
contribution in order (``ValueRanks``, for the value class). After the events of one command,
each trigger among them is matched against the plans in force at that point of the log; what
it decides depends on nothing but the log, so replaying the log decides the same again.

- A trigger recorded by an import starts nothing (nobody is thanked for a 2019 order), and nor
  does one recorded more than ``STALE_DAYS`` after its business time (the scheduler catching up
  on history, such as the dormancy an imported history left due): a plan is about prompt
  contact, and every step of it would be overdue already.
- The audience is judged after the command: a first purchase that upgrades the tier is judged
  at the new tier; an enrolment with a friend's code is judged referred.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from domain import value
from domain.members.followups import FollowupStart, followup_id
from domain.members.status import stage
from domain.plans import Audience, PlanVersion, group_of
from domain.program import ProgramRules

STALE_DAYS = 7
IMPORT_CAUSE = "import:"

# A member event's class name -> the trigger it is (a purchase is also ``first_purchase``).
TRIGGERS = {
    "Enrolled": "enrolled",
    "PurchaseRecorded": "purchase",
    "TierUpgraded": "tier_upgraded",
    "BecameDormant": "became_dormant",
    "ReferralRewarded": "referral_rewarded",
    "PointsExpiring": "points_expiring",
    "GuaranteeExpiring": "guarantee_expiring",
}
# The events that change what an audience is judged by.
PROFILE_EVENTS = {
    "Enrolled",
    "ReferredBy",
    "PurchaseRecorded",
    "PurchaseRefunded",
    "GuaranteeClaimed",
    "PointsRedeemed",
    "RedemptionCancelled",
    "TierUpgraded",
    "TierDowngraded",
}


@dataclass
class Profile:
    member_id: str
    purchases: int = 0
    last_purchase_at: datetime | None = None
    tier: str | None = None  # None: the program's lowest
    referred: bool = False
    money: Decimal = Decimal(0)  # bought - refunds - guarantee payouts
    points_redeemed: int = 0
    # The member's follow-up events so far: a trigger is named by the member's version less
    # these, which does not depend on when the process wrote its own (``trigger_number``).
    followup_events: int = 0

    def trigger_number(self, version: int) -> int:
        return version - self.followup_events

    def contribution(self, point_value: Decimal) -> Decimal:
        return self.money - Decimal(self.points_redeemed) * point_value

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.member_id,
            self.purchases,
            None if self.last_purchase_at is None else self.last_purchase_at.isoformat(),
            self.tier,
            int(self.referred),
            str(self.money),
            self.points_redeemed,
            self.followup_events,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Profile:
        member_id, purchases, last, tier, referred, money, points, followup_events = row
        return cls(
            member_id,
            int(purchases),
            None if last is None else datetime.fromisoformat(last),
            tier,
            bool(referred),
            Decimal(money),
            int(points),
            int(followup_events),
        )


class ValueRanks:
    """Every member-with-purchases' net contribution, in order: a member's value class is where
    its own stands (``domain/value.py``'s rule)."""

    def __init__(self) -> None:
        self.by_member: dict[str, Decimal] = {}
        self.ordered: list[Decimal] = []

    def set(self, member_id: str, contribution: Decimal | None) -> None:
        old = self.by_member.pop(member_id, None)
        if old is not None:
            del self.ordered[bisect.bisect_left(self.ordered, old)]
        if contribution is not None:
            self.by_member[member_id] = contribution
            bisect.insort(self.ordered, contribution)

    def value_class(self, member_id: str) -> str | None:
        """A-D; None for a member without purchases (it has no class)."""
        mine = self.by_member.get(member_id)
        if mine is None:
            return None
        better = len(self.ordered) - bisect.bisect_right(self.ordered, mine)
        return value.value_class_of(mine, better, len(self.ordered))


def apply(profile: Profile, name: str, event: Any) -> None:
    """What the member event ``name`` changes of the facts an audience is judged by."""
    if name == "PurchaseRecorded":
        profile.purchases += 1
        profile.last_purchase_at = event.at
        profile.money += event.amount
    elif name == "PurchaseRefunded":
        profile.money -= event.amount
    elif name == "GuaranteeClaimed":
        # Its own refund (of what was unrefunded) is recorded beside it: the payout replaces it.
        profile.money -= event.payout - event.unrefunded
    elif name == "PointsRedeemed":
        profile.points_redeemed += event.points
    elif name == "RedemptionCancelled":
        profile.points_redeemed -= sum(part["points"] for part in event.returned)
    elif name in ("TierUpgraded", "TierDowngraded"):
        profile.tier = event.to_tier
    elif name == "ReferredBy":
        profile.referred = True


def triggers_of(name: str, profile: Profile) -> list[str]:
    """The triggers the member event ``name`` is (``profile``: after the event)."""
    trigger = TRIGGERS.get(name)
    if trigger is None:
        return []
    if name == "PurchaseRecorded" and profile.purchases == 1:
        return ["first_purchase", "purchase"]
    return [trigger]


def starts_anything(event: Any) -> bool:
    """Live, and recorded promptly: an import, or history caught up with, starts nothing."""
    if str(event.cause).startswith(IMPORT_CAUSE):
        return False
    return bool(event.timestamp - event.at <= timedelta(days=STALE_DAYS))


def in_audience(
    audience: Audience,
    profile: Profile,
    value_class: str | None,
    at: datetime,
    rules: ProgramRules,
) -> bool:
    if audience.referred is not None and audience.referred != profile.referred:
        return False
    tier = profile.tier or rules.tiers[0].name
    if audience.tiers and tier not in audience.tiers:
        return False
    if audience.value_classes and value_class not in audience.value_classes:
        return False
    if audience.stages:
        rank = next((n for n, t in enumerate(rules.tiers) if t.name == tier), 0)
        found = stage(
            profile.purchases,
            profile.last_purchase_at,
            rank,
            at,
            rules.dormant_days,
            rules.lost_days,
        )
        if found.value not in audience.stages:
            return False
    return True


def decide(
    plans: Iterable[PlanVersion],
    triggers: list[str],
    profile: Profile,
    value_class: str | None,
    trigger_number: int,
    at: datetime,
    rules: ProgramRules,
    purchases_at_trigger: int,
) -> list[FollowupStart]:
    """The follow-ups that the triggers of one member event start, under the plans in force
    (``profile``: after the command; ``purchases_at_trigger``: the member's purchases when the
    event was recorded, for the stop condition)."""
    started = []
    for version in plans:
        plan = version.plan
        if not plan.active or plan.trigger not in triggers:
            continue
        if not in_audience(plan.audience, profile, value_class, at, rules):
            continue
        started.append(
            FollowupStart(
                followup=followup_id(version.name, trigger_number, profile.member_id),
                plan=version.name,
                plan_version=version.version,
                group=group_of(profile.member_id, version.name, plan.holdout_percent),
                trigger=plan.trigger,
                trigger_at=at,
                steps=tuple((s.delay_days, s.channel, s.message_key) for s in plan.steps),
                stop=plan.stop,
                goal_event=plan.goal.event,
                goal_days=plan.goal.within_days,
                purchases_at_trigger=purchases_at_trigger,
            )
        )
    return started
