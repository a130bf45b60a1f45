"""The loyalty program's rules as value objects, and the versioned Program aggregate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.domain import Aggregate

from domain.actors import Cause
from domain.errors import InvalidInput

NAMESPACE = uuid5(NAMESPACE_URL, "https://daifuku.dev/ledger")
PROGRAM_ID = uuid5(NAMESPACE, "program")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class TierRule:
    name: str
    threshold: Decimal
    multiplier: Decimal


@dataclass(frozen=True)
class GuaranteePolicy:
    name: str
    refund_percent: int
    window_days: int
    evidence_required: bool


@dataclass(frozen=True)
class Reward:
    id: str
    name: str
    points: int


@dataclass(frozen=True)
class ReferralTerms:
    referrer_points: int = 500
    referee_points: int = 250
    qualifying_amount: Decimal = Decimal("50.00")
    cap: int = 20
    cap_days: int = 365


DEFAULT_TIERS = (
    TierRule("bronze", Decimal("0"), Decimal("1.0")),
    TierRule("silver", Decimal("500"), Decimal("1.25")),
    TierRule("gold", Decimal("2000"), Decimal("1.5")),
    TierRule("platinum", Decimal("5000"), Decimal("2.0")),
)
DEFAULT_GUARANTEES = (
    GuaranteePolicy("satisfaction", 100, 30, False),
    GuaranteePolicy("trial-90", 100, 90, False),
    GuaranteePolicy("plus-10", 110, 60, False),
    GuaranteePolicy("double", 200, 30, True),
    GuaranteePolicy("outcome-365", 100, 365, True),
)
DEFAULT_REWARDS = (
    Reward("coffee", "A coffee on the house", 500),
    Reward("voucher-10", "10.00 off the next order", 1000),
    Reward("free-shipping", "Free shipping on one order", 300),
)


@dataclass(frozen=True)
class ProgramRules:
    """Every rule of PROGRAM.md that an operator may change; defaults are the document's."""

    currency: str = "USD"
    points_per_currency_unit: int = 1
    return_window_days: int = 30
    lot_lifetime_days: int = 730
    cross_sell_bonus: int = 50
    tier_period_days: int = 365
    dormant_days: int = 180
    lost_days: int = 365
    point_value: Decimal = Decimal("0.01")
    tiers: tuple[TierRule, ...] = DEFAULT_TIERS
    guarantees: tuple[GuaranteePolicy, ...] = DEFAULT_GUARANTEES
    rewards: tuple[Reward, ...] = DEFAULT_REWARDS
    referrals: ReferralTerms = field(default_factory=ReferralTerms)
    # Days before a lot expires, or a guarantee window closes, that the member is told; 0: never.
    expiry_notice_days: int = 30
    guarantee_notice_days: int = 7

    def tier(self, name: str) -> TierRule:
        for rule in self.tiers:
            if rule.name == name:
                return rule
        # A tier removed by a later program version is treated as the lowest one.
        return self.tiers[0]

    def tier_rank(self, name: str) -> int:
        for rank, rule in enumerate(self.tiers):
            if rule.name == name:
                return rank
        return 0

    def tier_for_spend(self, spend: Decimal) -> TierRule:
        reached = self.tiers[0]
        for rule in self.tiers:
            if spend >= rule.threshold:
                reached = rule
        return reached

    def tier_above(self, name: str) -> TierRule | None:
        rank = self.tier_rank(name)
        return self.tiers[rank + 1] if rank + 1 < len(self.tiers) else None

    def tier_below(self, name: str) -> TierRule:
        return self.tiers[max(self.tier_rank(name) - 1, 0)]

    def guarantee(self, name: str) -> GuaranteePolicy | None:
        return next((g for g in self.guarantees if g.name == name), None)

    def reward(self, reward_id: str) -> Reward | None:
        return next((r for r in self.rewards if r.id == reward_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "earning": {
                "points_per_currency_unit": self.points_per_currency_unit,
                "cross_sell_bonus": self.cross_sell_bonus,
                "return_window_days": self.return_window_days,
                "lot_lifetime_days": self.lot_lifetime_days,
                "point_value": str(self.point_value),
            },
            "tier_period_days": self.tier_period_days,
            "lifecycle": {"dormant_days": self.dormant_days, "lost_days": self.lost_days},
            "tiers": [
                {"name": t.name, "threshold": str(t.threshold), "multiplier": str(t.multiplier)}
                for t in self.tiers
            ],
            "guarantees": [
                {
                    "name": g.name,
                    "refund_percent": g.refund_percent,
                    "window_days": g.window_days,
                    "evidence_required": g.evidence_required,
                }
                for g in self.guarantees
            ],
            "rewards": [{"id": r.id, "name": r.name, "points": r.points} for r in self.rewards],
            "referrals": {
                "referrer_points": self.referrals.referrer_points,
                "referee_points": self.referrals.referee_points,
                "qualifying_amount": str(self.referrals.qualifying_amount),
                "cap": self.referrals.cap,
                "cap_days": self.referrals.cap_days,
            },
            "notices": {
                "expiry_notice_days": self.expiry_notice_days,
                "guarantee_notice_days": self.guarantee_notice_days,
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> ProgramRules:
        """Parse and check a whole program; every problem is reported at once, by field path."""
        reader = _Reader(data)
        rules = reader.read()
        if reader.errors:
            raise InvalidInput(reader.errors)
        return rules


# The bounds of every whole-number rule, by its path in the rules document ("*" stands for each
# item of a list); the API documents and checks the same ones (api/schemas.py).
WHOLE_NUMBER_BOUNDS: dict[str, tuple[int, int]] = {
    "earning.points_per_currency_unit": (1, 10_000),
    "earning.cross_sell_bonus": (0, 1_000_000),
    "earning.return_window_days": (0, 3650),
    "earning.lot_lifetime_days": (1, 36500),
    "tier_period_days": (1, 3650),
    "lifecycle.dormant_days": (1, 36500),
    "lifecycle.lost_days": (1, 36500),
    "guarantees.*.refund_percent": (1, 1000),
    "guarantees.*.window_days": (1, 3650),
    "rewards.*.points": (1, 10_000_000),
    "referrals.referrer_points": (0, 10_000_000),
    "referrals.referee_points": (0, 10_000_000),
    "referrals.cap": (0, 1_000_000),
    "referrals.cap_days": (1, 3650),
    "notices.expiry_notice_days": (0, 365),
    "notices.guarantee_notice_days": (0, 365),
}

# The whole-number fields of ProgramRules itself: (section of the document, field); the default
# of each is ProgramRules()'s, which is also what a program stored before the rule existed reads.
WHOLE_NUMBERS = (
    ("earning", "points_per_currency_unit"),
    ("earning", "cross_sell_bonus"),
    ("earning", "return_window_days"),
    ("earning", "lot_lifetime_days"),
    ("", "tier_period_days"),
    ("lifecycle", "dormant_days"),
    ("lifecycle", "lost_days"),
    ("notices", "expiry_notice_days"),
    ("notices", "guarantee_notice_days"),
)


class _Reader:
    def __init__(self, data: Any) -> None:
        self.data = data
        self.errors: dict[str, list[str]] = {}

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return {}
        return value

    def known(self, value: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in value:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else key, "unknown field")

    def integer(self, value: Any, path: str, default: int) -> int:
        low, high = WHOLE_NUMBER_BOUNDS[re.sub(r"\.\d+\.", ".*.", path)]
        return self.whole(value, path, low, high, default)

    def whole(self, value: Any, path: str, low: int, high: int, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "must be a whole number")
            return default
        if not low <= value <= high:
            self.fail(path, f"must be between {low} and {high}")
            return default
        return value

    def decimal(self, value: Any, path: str, low: Decimal, default: Decimal) -> Decimal:
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, "must be a decimal string")
            return default
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.fail(path, "must be a decimal string")
            return default
        if not number.is_finite() or number < low:
            self.fail(path, f"must be at least {low}")
            return default
        return number

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            self.fail(path, "must be 1-32 characters of a-z, 0-9 and '-'")
            return ""
        return value

    def read(self) -> ProgramRules:
        top = self.obj(self.data, "rules")
        self.known(
            top,
            "",
            {
                "currency", "earning", "tier_period_days", "lifecycle", "tiers",
                "guarantees", "rewards", "referrals", "notices",
            },
        )  # fmt: skip
        base = ProgramRules()
        currency = top.get("currency", base.currency)
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            self.fail("currency", "must be a three-letter ISO 4217 code")
            currency = base.currency
        earning = self.obj(top.get("earning", {}), "earning")
        self.known(
            earning,
            "earning",
            {
                "points_per_currency_unit", "cross_sell_bonus", "return_window_days",
                "lot_lifetime_days", "point_value",
            },
        )  # fmt: skip
        lifecycle = self.obj(top.get("lifecycle", {}), "lifecycle")
        self.known(lifecycle, "lifecycle", {"dormant_days", "lost_days"})
        notices = self.obj(top.get("notices", {}), "notices")
        self.known(notices, "notices", {"expiry_notice_days", "guarantee_notice_days"})
        sections = {"": top, "earning": earning, "lifecycle": lifecycle, "notices": notices}
        whole_numbers = {
            name: self.integer(
                sections[section].get(name),
                f"{section}.{name}" if section else name,
                getattr(base, name),
            )
            for section, name in WHOLE_NUMBERS
        }
        rules = replace(
            base,
            currency=currency,
            point_value=self.decimal(
                earning.get("point_value"), "earning.point_value", Decimal(0), base.point_value
            ),
            tiers=self.tiers(top.get("tiers")),
            guarantees=self.guarantees(top.get("guarantees")),
            rewards=self.rewards(top.get("rewards")),
            referrals=self.referrals(top.get("referrals")),
            **whole_numbers,
        )
        return rules

    def tiers(self, value: Any) -> tuple[TierRule, ...]:
        if value is None:
            return DEFAULT_TIERS
        if not isinstance(value, list) or not value:
            self.fail("tiers", "must be a non-empty list")
            return DEFAULT_TIERS
        tiers: list[TierRule] = []
        for i, raw in enumerate(value):
            path = f"tiers.{i}"
            item = self.obj(raw, path)
            self.known(item, path, {"name", "threshold", "multiplier"})
            tiers.append(
                TierRule(
                    self.name(item.get("name"), f"{path}.name"),
                    self.decimal(
                        item.get("threshold"), f"{path}.threshold", Decimal(0), Decimal(0)
                    ),
                    self.decimal(
                        item.get("multiplier"), f"{path}.multiplier", Decimal(0), Decimal(1)
                    ),
                )
            )
        if tiers[0].threshold != 0:
            self.fail("tiers.0.threshold", "the first tier must start at 0")
        for i in range(1, len(tiers)):
            if tiers[i].threshold <= tiers[i - 1].threshold:
                self.fail(f"tiers.{i}.threshold", "thresholds must increase")
        if len({t.name for t in tiers}) != len(tiers):
            self.fail("tiers", "tier names must be unique")
        return tuple(tiers)

    def guarantees(self, value: Any) -> tuple[GuaranteePolicy, ...]:
        if value is None:
            return DEFAULT_GUARANTEES
        if not isinstance(value, list):
            self.fail("guarantees", "must be a list")
            return DEFAULT_GUARANTEES
        policies: list[GuaranteePolicy] = []
        for i, raw in enumerate(value):
            path = f"guarantees.{i}"
            item = self.obj(raw, path)
            self.known(item, path, {"name", "refund_percent", "window_days", "evidence_required"})
            required = item.get("evidence_required", False)
            if not isinstance(required, bool):
                self.fail(f"{path}.evidence_required", "must be true or false")
                required = False
            policies.append(
                GuaranteePolicy(
                    self.name(item.get("name"), f"{path}.name"),
                    self.integer(item.get("refund_percent"), f"{path}.refund_percent", 100),
                    self.integer(item.get("window_days"), f"{path}.window_days", 30),
                    required,
                )
            )
        if len({p.name for p in policies}) != len(policies):
            self.fail("guarantees", "policy names must be unique")
        return tuple(policies)

    def rewards(self, value: Any) -> tuple[Reward, ...]:
        if value is None:
            return DEFAULT_REWARDS
        if not isinstance(value, list):
            self.fail("rewards", "must be a list")
            return DEFAULT_REWARDS
        rewards: list[Reward] = []
        for i, raw in enumerate(value):
            path = f"rewards.{i}"
            item = self.obj(raw, path)
            self.known(item, path, {"id", "name", "points"})
            title = item.get("name")
            if not isinstance(title, str) or not 1 <= len(title) <= 200:
                self.fail(f"{path}.name", "must be 1-200 characters")
                title = ""
            rewards.append(
                Reward(
                    self.name(item.get("id"), f"{path}.id"),
                    title,
                    self.integer(item.get("points"), f"{path}.points", 1),
                )
            )
        if len({r.id for r in rewards}) != len(rewards):
            self.fail("rewards", "reward ids must be unique")
        return tuple(rewards)

    def referrals(self, value: Any) -> ReferralTerms:
        base = ReferralTerms()
        if value is None:
            return base
        item = self.obj(value, "referrals")
        self.known(
            item,
            "referrals",
            {"referrer_points", "referee_points", "qualifying_amount", "cap", "cap_days"},
        )
        return ReferralTerms(
            self.integer(
                item.get("referrer_points"), "referrals.referrer_points", base.referrer_points
            ),
            self.integer(
                item.get("referee_points"), "referrals.referee_points", base.referee_points
            ),
            self.decimal(
                item.get("qualifying_amount"),
                "referrals.qualifying_amount",
                Decimal(0),
                base.qualifying_amount,
            ),
            self.integer(item.get("cap"), "referrals.cap", base.cap),
            self.integer(item.get("cap_days"), "referrals.cap_days", base.cap_days),
        )


@dataclass(frozen=True)
class Terms:
    """The program version a command runs under."""

    version: int
    rules: ProgramRules


@dataclass(frozen=True)
class ProgramVersion:
    version: int
    published_at: datetime
    rules: ProgramRules


class Program(Aggregate):
    """The one program of a ledger; publishing a version is an event, so replays see old rules."""

    class Started(Aggregate.Created):
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

    class Published(Aggregate.Event):
        version: int
        rules: dict[str, Any]
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.versions.append(
                {"version": self.version, "published_at": self.timestamp, "rules": self.rules}
            )

    def __init__(self, cause: str, actor: dict[str, str] | None = None) -> None:
        self.versions: list[dict[str, Any]] = []

    @classmethod
    def start(cls, rules: ProgramRules, cause: Cause, at: datetime) -> Program:
        program = cls._create(
            cls.Started, id=PROGRAM_ID, cause=cause.id, actor=cause.actor.to_dict(), timestamp=at
        )
        program.publish(rules, cause, at)
        return program

    def publish(self, rules: ProgramRules, cause: Cause, at: datetime) -> ProgramVersion:
        version = len(self.versions) + 1
        self.trigger_event(
            self.Published,
            version=version,
            rules=rules.to_dict(),
            cause=cause.id,
            actor=cause.actor.to_dict(),
            timestamp=at,
        )
        return self.current()

    def current(self) -> ProgramVersion:
        return self.at_version(len(self.versions))

    def at_version(self, version: int) -> ProgramVersion:
        entry = self.versions[version - 1]
        return ProgramVersion(
            version=entry["version"],
            published_at=entry["published_at"],
            rules=ProgramRules.from_dict(entry["rules"]),
        )
