"""Follow-up plans: for a rank of customers, when to contact them, with what and how.

A plan (``../shared/PROGRAM.md``, Follow-up plans) names an audience, a trigger (a member
event), steps (a delay from the trigger, a channel, a message key the shop's systems render), a
stop condition, a goal (an event within a window, for measuring the effect) and the share of the
audience held out (they get no steps, so the effect can be measured against them).

Plans are versioned like the program: ``FollowupPlans`` is one aggregate holding every plan's
versions; publishing a version is an event, and a follow-up keeps the version it started under.
The five default plans are recorded when the ledger first starts, as the program's defaults are.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid5

from eventsourcing.domain import Aggregate

from domain.actors import Cause
from domain.errors import InvalidInput
from domain.program import NAME_PATTERN, NAMESPACE, _Reader

PLANS_ID = uuid5(NAMESPACE, "followup-plans")

# The member events a plan may start on (each is recorded on the member; see
# ``domain/followup_triggers.py`` for which event is which trigger).
TRIGGERS = (
    "enrolled",
    "first_purchase",
    "purchase",
    "tier_upgraded",
    "became_dormant",
    "referral_rewarded",
    "points_expiring",
    "guarantee_expiring",
)
CHANNELS = ("email", "sms", "call", "letter", "push")
STOPS = ("purchased",)  # the member purchased since the trigger
GOAL_EVENTS = ("purchase", "redemption")
VALUE_CLASSES = ("A", "B", "C", "D")
STAGES = ("prospect", "new", "repeat", "loyal", "dormant", "lost")
GROUPS = ("treated", "holdout")
MESSAGE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
MOST_STEPS = 20
MOST_DELAY_DAYS = 365
MOST_GOAL_DAYS = 365
MOST_HOLDOUT_PERCENT = 50
MOST_DESCRIPTION = 500


@dataclass(frozen=True)
class PlanStep:
    delay_days: int
    channel: str
    message_key: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay_days": self.delay_days,
            "channel": self.channel,
            "message_key": self.message_key,
        }


@dataclass(frozen=True)
class Audience:
    """Who a plan is for; an empty list (or None for ``referred``) is anyone."""

    value_classes: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    referred: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value_class": list(self.value_classes),
            "stage": list(self.stages),
            "tier": list(self.tiers),
            "referred": self.referred,
        }


@dataclass(frozen=True)
class Goal:
    event: str = "purchase"
    within_days: int = 30

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "within_days": self.within_days}


@dataclass(frozen=True)
class Plan:
    trigger: str
    steps: tuple[PlanStep, ...]
    audience: Audience = field(default_factory=Audience)
    stop: str | None = "purchased"
    goal: Goal = field(default_factory=Goal)
    holdout_percent: int = 10
    active: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "active": self.active,
            "audience": self.audience.to_dict(),
            "trigger": self.trigger,
            "steps": [step.to_dict() for step in self.steps],
            "stop": self.stop,
            "goal": self.goal.to_dict(),
            "holdout_percent": self.holdout_percent,
        }

    @classmethod
    def from_dict(cls, data: Any, tiers: tuple[str, ...] | None = None) -> Plan:
        """The plan a document describes, checked; ``tiers``: the program's tier names, which
        an audience's tiers must be among. Every problem is reported at once."""
        reader = _PlanReader(tiers)
        plan = reader.read_plan(data)
        if reader.errors:
            raise InvalidInput(reader.errors)
        return plan


@dataclass(frozen=True)
class PlanVersion:
    name: str
    version: int
    published_at: datetime
    plan: Plan


def group_of(member_id: str, plan: str, holdout_percent: int) -> str:
    """Treated or holdout, by a stable hash of member and plan: the same member falls in the
    same group of a plan at every trigger, in every version and in every replay."""
    digest = hashlib.sha256(f"{plan}\x00{member_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000  # 0.01% steps
    return "holdout" if bucket < holdout_percent * 100 else "treated"


def _steps(*steps: tuple[int, str, str]) -> tuple[PlanStep, ...]:
    return tuple(PlanStep(days, channel, key) for days, channel, key in steps)


DEFAULT_PLANS: dict[str, Plan] = {
    "thank-you": Plan(
        trigger="first_purchase",
        steps=_steps(
            (0, "email", "thank-you/thanks"),
            (3, "email", "thank-you/useful-information"),
            (7, "email", "thank-you/follow-up"),
        ),
        description="Thanks on the day of the first purchase, something useful three days "
        "later, a follow-up after a week.",
    ),
    "prospect": Plan(
        trigger="enrolled",
        audience=Audience(stages=("prospect",)),
        steps=_steps(
            (0, "email", "prospect/welcome"),
            (3, "email", "prospect/introduction"),
            (7, "email", "prospect/first-offer"),
        ),
        description="A member enrolled with no purchase yet: what to tell a prospect first, "
        "three days later and after a week.",
    ),
    "win-back": Plan(
        trigger="became_dormant",
        steps=_steps((0, "email", "win-back/we-miss-you"), (14, "letter", "win-back/offer")),
        goal=Goal("purchase", 60),
        description="A customer gone quiet for the program's dormant days.",
    ),
    "a-class": Plan(
        trigger="purchase",
        audience=Audience(value_classes=("A",)),
        steps=_steps((0, "call", "a-class/thank-you-call")),
        stop=None,
        goal=Goal("purchase", 90),
        description="A personal thank-you call to the best customers after each purchase.",
    ),
    "referrer": Plan(
        trigger="referral_rewarded",
        steps=_steps((0, "email", "referrer/thank-you")),
        stop=None,
        description="Thank a referrer when a friend's referral is rewarded.",
    ),
}


class FollowupPlans(Aggregate):
    """Every plan of a ledger with its versions (the defaults are each one's version 1)."""

    class Started(Aggregate.Created):
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

    class Published(Aggregate.Event):
        name: str
        version: int
        plan: dict[str, Any]
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.versions.setdefault(self.name, []).append(
                {"version": self.version, "published_at": self.timestamp, "plan": self.plan}
            )

    def __init__(self, cause: str, actor: dict[str, str] | None = None) -> None:
        self.versions: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def start(cls, cause: Cause, at: datetime) -> FollowupPlans:
        plans = cls._create(
            cls.Started, id=PLANS_ID, cause=cause.id, actor=cause.actor.to_dict(), timestamp=at
        )
        for name, plan in DEFAULT_PLANS.items():
            plans.publish(name, plan, cause, at)
        return plans

    def publish(
        self, name: str, plan: Plan, cause: Cause, at: datetime
    ) -> tuple[PlanVersion, bool]:
        """A new version of ``name`` (a new plan's first); the same plan as the one in force
        publishes nothing (False) and answers the version in force."""
        current = self.current(name)
        if current is not None and current.plan == plan:
            return current, False
        self.trigger_event(
            self.Published,
            name=name,
            version=len(self.versions.get(name, ())) + 1,
            plan=plan.to_dict(),
            cause=cause.id,
            actor=cause.actor.to_dict(),
            timestamp=at,
        )
        latest = self.current(name)
        assert latest is not None
        return latest, True

    def current(self, name: str) -> PlanVersion | None:
        entries = self.versions.get(name)
        return None if not entries else self.at_version(name, len(entries))

    def at_version(self, name: str, version: int) -> PlanVersion:
        entry = self.versions[name][version - 1]
        return version_of(name, entry["version"], entry["published_at"], entry["plan"])

    def names(self) -> list[str]:
        return sorted(self.versions)

    def history(self, name: str) -> list[PlanVersion]:
        return [self.at_version(name, n + 1) for n in range(len(self.versions.get(name, ())))]


def version_of(
    name: str, version: int, published_at: datetime, plan: dict[str, Any]
) -> PlanVersion:
    """A stored plan (it was checked when published: read as it was)."""
    return PlanVersion(name, version, published_at, _PlanReader(None).read_plan(plan))


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidInput({"name": ["must be 1-32 characters of a-z, 0-9 and '-'"]})


class _PlanReader(_Reader):
    """The program's reader of documents (field paths, every problem at once), for a plan."""

    def __init__(self, tiers: tuple[str, ...] | None) -> None:
        super().__init__(None)
        self.tier_names = tiers

    def choice(self, value: Any, path: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(path, f"must be one of {', '.join(allowed)}")
            return allowed[0]
        return str(value)

    def choices(self, value: Any, path: str, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(path, "must be a list of names")
            return ()
        if allowed is not None:
            for v in value:
                if v not in allowed:
                    self.fail(path, f"{v!r} is not one of {', '.join(allowed)}")
        if len(set(value)) != len(value):
            self.fail(path, "names a value twice")
        return tuple(value)

    def read_plan(self, data: Any) -> Plan:
        top = self.obj(data, "plan")
        self.known(
            top,
            "",
            {
                "description", "active", "audience", "trigger", "steps", "stop", "goal",
                "holdout_percent",
            },
        )  # fmt: skip
        description = top.get("description", "")
        if not isinstance(description, str) or len(description) > MOST_DESCRIPTION:
            self.fail("description", f"must be text of at most {MOST_DESCRIPTION} characters")
            description = ""
        active = top.get("active", True)
        if not isinstance(active, bool):
            self.fail("active", "must be true or false")
            active = True
        if "trigger" not in top:
            self.fail("trigger", "is required")
            trigger = TRIGGERS[0]
        else:
            trigger = self.choice(top["trigger"], "trigger", TRIGGERS)
        stop = top.get("stop", "purchased")
        if stop is not None:
            stop = self.choice(stop, "stop", STOPS)
        return Plan(
            trigger=trigger,
            steps=self.steps(top.get("steps")),
            audience=self.audience(top.get("audience")),
            stop=stop,
            goal=self.goal(top.get("goal")),
            holdout_percent=self.whole(
                top.get("holdout_percent"), "holdout_percent", 0, MOST_HOLDOUT_PERCENT, 10
            ),
            active=active,
            description=description,
        )

    def steps(self, value: Any) -> tuple[PlanStep, ...]:
        if not isinstance(value, list) or not value:
            self.fail("steps", "must be a non-empty list")
            return ()
        if len(value) > MOST_STEPS:
            self.fail("steps", f"must have at most {MOST_STEPS} steps")
        found: list[PlanStep] = []
        for index, raw in enumerate(value):
            path = f"steps.{index}"
            step = self.obj(raw, path)
            self.known(step, path, {"delay_days", "channel", "message_key"})
            for required in ("delay_days", "channel", "message_key"):
                if required not in step:
                    self.fail(f"{path}.{required}", "is required")
            delay = self.whole(step.get("delay_days"), f"{path}.delay_days", 0, MOST_DELAY_DAYS, 0)
            channel = (
                self.choice(step["channel"], f"{path}.channel", CHANNELS)
                if "channel" in step
                else CHANNELS[0]
            )
            key = step.get("message_key", "")
            if "message_key" in step and (not isinstance(key, str) or not MESSAGE_KEY.match(key)):
                self.fail(
                    f"{path}.message_key",
                    "must be 1-100 characters of A-Z, a-z, 0-9 and . _ : / - (not first)",
                )
                key = ""
            if found and delay < found[-1].delay_days:
                self.fail(f"{path}.delay_days", "must not be less than the step before's")
            found.append(PlanStep(delay, channel, str(key)))
        return tuple(found)

    def audience(self, value: Any) -> Audience:
        if value is None:
            return Audience()
        audience = self.obj(value, "audience")
        self.known(audience, "audience", {"value_class", "stage", "tier", "referred"})
        referred = audience.get("referred")
        if referred is not None and not isinstance(referred, bool):
            self.fail("audience.referred", "must be true, false or null")
            referred = None
        return Audience(
            value_classes=self.choices(
                audience.get("value_class"), "audience.value_class", VALUE_CLASSES
            ),
            stages=self.choices(audience.get("stage"), "audience.stage", STAGES),
            tiers=self.choices(audience.get("tier"), "audience.tier", self.tier_names),
            referred=referred,
        )

    def goal(self, value: Any) -> Goal:
        if value is None:
            return Goal()
        goal = self.obj(value, "goal")
        self.known(goal, "goal", {"event", "within_days"})
        return Goal(
            event=self.choice(goal.get("event", "purchase"), "goal.event", GOAL_EVENTS),
            within_days=self.whole(
                goal.get("within_days"), "goal.within_days", 1, MOST_GOAL_DAYS, 30
            ),
        )
