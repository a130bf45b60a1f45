"""Outbound events: the public event types, the message a ledger event becomes, and the
subscriptions that ask for them.

The public type names are a contract with the shop's systems (``../shared/PROGRAM.md``,
Outbound events): ``TYPES`` below is the one table of them, each with the member event it is
made from and the fields its message carries. A class name may change; these names do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actors import Cause
from domain.eventlog import to_json

ROTATION_OVERLAP = timedelta(hours=24)  # the old secret still signs this long after a rotation
WILDCARD = "*"
MEMBER_TOPIC_PREFIX = "domain.members:Member."


@dataclass(frozen=True)
class PublicType:
    name: str
    event: str  # the member event's class name (its stored topic is Member.<event>)
    fields: tuple[str, ...]  # what the message's data carries beside what every message has
    what: str


TYPES: tuple[PublicType, ...] = (
    PublicType("member.enrolled", "Enrolled", ("referral_code",), "a member enrolled"),
    PublicType(
        "purchase.recorded",
        "PurchaseRecorded",
        (
            "order_id",
            "amount",
            "currency",
            "occurred_at",
            "items",
            "guarantee",
            "points",
            "bonus",
            "available_at",
            "expires_at",
        ),
        "a purchase was recorded, with the points it earned",
    ),
    PublicType(
        "refund.recorded",
        "PurchaseRefunded",
        ("order_id", "refund_id", "amount", "reason", "occurred_at", "points_clawed_back"),
        "a purchase was refunded, wholly or in part",
    ),
    PublicType("points.available", "PointsBecameAvailable", ("lot", "points"), "a lot matured"),
    PublicType(
        "points.expiring",
        "PointsExpiring",
        ("lot", "points", "expires_at"),
        "a notice: a lot expires within the program's notice days (default 30)",
    ),
    PublicType("points.expired", "PointsExpired", ("lot", "points"), "a lot expired"),
    PublicType(
        "tier.upgraded",
        "TierUpgraded",
        ("from_tier", "to_tier", "order_id", "review_at"),
        "a purchase lifted the member's tier",
    ),
    PublicType(
        "tier.downgraded",
        "TierDowngraded",
        ("from_tier", "to_tier", "reason", "review_at"),
        "a review or a refund lowered the member's tier",
    ),
    PublicType(
        "redemption.created",
        "PointsRedeemed",
        ("redemption_id", "points", "reward"),
        "points were redeemed",
    ),
    PublicType(
        "redemption.cancelled",
        "RedemptionCancelled",
        ("redemption_id", "returned"),
        "a redemption was cancelled and its points given back",
    ),
    PublicType(
        "referral.qualified",
        "ReferralQualified",
        ("referee_id", "order_id", "points", "reward_at"),
        "a referee's first qualifying purchase: the referrer's reward is due at reward_at",
    ),
    PublicType(
        "referral.rewarded",
        "ReferralRewarded",
        ("referee_id",),
        "the referrer's reward became theirs",
    ),
    PublicType(
        "referral.voided",
        "ReferralVoided",
        ("referee_id", "refund_id", "points_clawed_back"),
        "a refund voided a referral reward",
    ),
    PublicType(
        "referral.capped",
        "ReferralCapped",
        ("referee_id", "order_id"),
        "a referral qualified past the referrer's cap: no reward",
    ),
    PublicType(
        "guarantee.claimed",
        "GuaranteeClaimed",
        ("order_id", "claim_id", "policy", "refund_percent", "payout", "refund_id"),
        "a refund guarantee was claimed and paid out",
    ),
    PublicType(
        "guarantee.expiring",
        "GuaranteeExpiring",
        ("order_id", "policy", "closes_at"),
        "a notice: a guarantee window closes within the program's notice days (default 7)",
    ),
    PublicType(
        "followup.step_due",
        "FollowupStepDue",
        ("followup", "plan", "plan_version", "step", "channel", "message_key", "due_at"),
        "a step of a follow-up plan fell due: the shop contacts the member by the channel with "
        "the message the key names, and may report the outcome",
    ),
    PublicType(
        "personal_data.erased",
        "PersonalDataErased",
        ("erased",),
        "the member's personal data was erased",
    ),
)
TYPE_NAMES = tuple(t.name for t in TYPES)
BY_TOPIC = {f"{MEMBER_TOPIC_PREFIX}{t.event}": t for t in TYPES}


def check_types(types: list[str]) -> str | None:
    """None if ``types`` is a subscription's list of types, else what is wrong with it."""
    if not types:
        return 'must name at least one event type, or be ["*"] for all'
    if WILDCARD in types and len(types) > 1:
        return '"*" stands for every type: give it alone'
    unknown = sorted({t for t in types if t != WILDCARD and t not in TYPE_NAMES})
    if unknown:
        return f"unknown event type {', '.join(unknown)}; known: {', '.join(TYPE_NAMES)}"
    if len(set(types)) != len(types):
        return "names a type twice"
    return None


@dataclass(frozen=True)
class Message:
    """What one ledger event tells a subscriber: its public type, the member, and its data."""

    type: str
    member_id: str
    recorded_at: datetime
    data: dict[str, Any]
    imported: bool


def message_of(topic: str, event: Any, position: int) -> Message | None:
    """The message ``event`` (recorded at ``position`` under ``topic``) becomes, or None if no
    public type covers it."""
    public = BY_TOPIC.get(topic)
    if public is None:
        return None
    actor = getattr(event, "actor", None)
    data: dict[str, Any] = {
        "member_id": event.member_id,
        "occurred_at": to_json(event.at),  # business time
        "recorded_at": to_json(event.timestamp),
        "position": position,
    }
    if actor is not None:
        data["actor"] = actor
    for name in public.fields:
        data[name] = to_json(getattr(event, name, None))
    return Message(
        type=public.name,
        member_id=event.member_id,
        recorded_at=event.timestamp,
        data=data,
        imported=actor is not None and actor.get("kind") == "import",
    )


def subscribed(types: list[str], include_imports: bool, message: Message) -> bool:
    if message.imported and not include_imports:
        return False
    return WILDCARD in types or message.type in types


class Subscription(Aggregate):
    """An endpoint of the shop's that receives the messages of the types it names.

    Its secret is sealed (``sealed_secret``: adapters/vault.py, under a data key of its own),
    so the ledger and its export hold no secret in plain text; removing the subscription
    destroys that key.
    """

    class Subscribed(Aggregate.Created):
        url: str
        types: list[str]
        description: str | None
        include_imports: bool
        sealed_secret: str
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

    class Changed(Aggregate.Event):
        changes: dict[str, Any]  # url, types, description, include_imports: the new values
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            for name, value in self.changes.items():
                setattr(aggregate, name, value)

    class Disabled(Aggregate.Event):
        reason: str
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = False
            aggregate.disabled_reason = self.reason
            aggregate.disabled_at = self.timestamp

    class Enabled(Aggregate.Event):
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.enabled = True
            aggregate.disabled_reason = None
            aggregate.disabled_at = None

    class SecretRotated(Aggregate.Event):
        sealed_secret: str
        previous_until: datetime
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.previous_secret = aggregate.sealed_secret
            aggregate.previous_until = self.previous_until
            aggregate.sealed_secret = self.sealed_secret

    class ReplayRequested(Aggregate.Event):
        """Deliver again every message of the subscription's types after ``after`` up to
        ``until`` (the log's head when it was asked for)."""

        replay_id: str
        after: int
        until: int
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

    class Removed(Aggregate.Event):
        cause: str
        actor: dict[str, str] | None = field(default=None, kw_only=True)

        def apply(self, aggregate: Any) -> None:
            aggregate.removed = True
            aggregate.enabled = False

    def __init__(
        self,
        url: str,
        types: list[str],
        description: str | None,
        include_imports: bool,
        sealed_secret: str,
        cause: str,
        actor: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.types = types
        self.description = description
        self.include_imports = include_imports
        self.sealed_secret = sealed_secret
        self.previous_secret: str | None = None
        self.previous_until: datetime | None = None
        self.enabled = True
        self.disabled_reason: str | None = None
        self.disabled_at: datetime | None = None
        self.removed = False

    @classmethod
    def subscribe(
        cls,
        subscription_id: UUID,
        url: str,
        types: list[str],
        description: str | None,
        include_imports: bool,
        sealed_secret: str,
        cause: Cause,
        at: datetime,
    ) -> Subscription:
        return cls._create(
            cls.Subscribed,
            id=subscription_id,
            url=url,
            types=types,
            description=description,
            include_imports=include_imports,
            sealed_secret=sealed_secret,
            cause=cause.id,
            actor=cause.actor.to_dict(),
            timestamp=at,
        )

    def _stamp(self, cause: Cause, at: datetime) -> dict[str, Any]:
        return {"cause": cause.id, "actor": cause.actor.to_dict(), "timestamp": at}

    def change(self, changes: dict[str, Any], cause: Cause, at: datetime) -> bool:
        """Record the fields that differ; False if none did."""
        different = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if different:
            self.trigger_event(self.Changed, changes=different, **self._stamp(cause, at))
        return bool(different)

    def disable(self, reason: str, cause: Cause, at: datetime) -> None:
        if self.enabled:
            self.trigger_event(self.Disabled, reason=reason, **self._stamp(cause, at))

    def enable(self, cause: Cause, at: datetime) -> None:
        if not self.enabled and not self.removed:
            self.trigger_event(self.Enabled, **self._stamp(cause, at))

    def rotate(self, sealed_secret: str, cause: Cause, at: datetime) -> None:
        self.trigger_event(
            self.SecretRotated,
            sealed_secret=sealed_secret,
            previous_until=at + ROTATION_OVERLAP,
            **self._stamp(cause, at),
        )

    def request_replay(
        self, replay_id: str, after: int, until: int, cause: Cause, at: datetime
    ) -> None:
        self.trigger_event(
            self.ReplayRequested,
            replay_id=replay_id,
            after=after,
            until=until,
            **self._stamp(cause, at),
        )

    def remove(self, cause: Cause, at: datetime) -> None:
        if not self.removed:
            self.trigger_event(self.Removed, **self._stamp(cause, at))

    def signing_secrets(self, now: datetime) -> list[str]:
        """The sealed secrets that sign a message sent at ``now``: the current one, and the
        previous one for a day after a rotation."""
        secrets = [self.sealed_secret]
        if self.previous_secret and self.previous_until and now < self.previous_until:
            secrets.append(self.previous_secret)
        return secrets
