"""Request and response bodies; unknown fields in a request body are refused (RAISE)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.routing import BaseConverter

from adapters.keys import KEY_ID_PATTERN, KEY_ROLES, MAX_KEY_NAME
from api.problems import DOMAIN_PROBLEMS
from domain.errors import InsufficientPoints
from domain.eventlog import MAX_POSITION
from domain.program import NAME_PATTERN, WHOLE_NUMBER_BOUNDS

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)
KEY_ID_RE = re.compile(KEY_ID_PATTERN)
FOLLOWUP_ID_PATTERN = r"^[A-Za-z0-9._:~-]{1,128}$"
FOLLOWUP_ID_RE = re.compile(FOLLOWUP_ID_PATTERN)
DECIMAL_RE = re.compile(r"^[+-]?\d{1,16}(\.\d{1,16})?$")
# RFC 3339 section 5.6: date, "T" (or space), time, optional fraction, and a mandatory offset.
INSTANT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class IdConverter(BaseConverter):
    """Path ids match like the default converter; the view's check makes a bad one a 422."""

    regex = "[^/]+"


def id_parameter(converter: IdConverter) -> dict[str, Any]:
    return {"type": "string", "pattern": ID_PATTERN}


class KeyIdConverter(BaseConverter):
    """An API key's public id (the server chose it): key_ and 12 hex digits."""

    regex = "[^/]+"


def key_id_parameter(converter: KeyIdConverter) -> dict[str, Any]:
    return {"type": "string", "pattern": KEY_ID_PATTERN}


class FollowupIdConverter(BaseConverter):
    """A follow-up's id (the ledger chose it: plan~n~member); one that names no follow-up is a
    404, so the check only keeps out what no id could hold."""

    regex = "[^/]+"


def followup_id_parameter(converter: FollowupIdConverter) -> dict[str, Any]:
    return {"type": "string", "pattern": FOLLOWUP_ID_PATTERN, "example": "thank-you~3~cust-1001"}


class PlanNameConverter(BaseConverter):
    """A follow-up plan's name; the view's check makes a bad one a 422."""

    regex = "[^/]+"


def plan_name_parameter(converter: PlanNameConverter) -> dict[str, Any]:
    return {"type": "string", "pattern": NAME_PATTERN.pattern, "example": "thank-you"}


# What a path id must look like, by argument name; every other *_id is a caller-chosen id.
PATH_IDS = {
    "key_id": (KEY_ID_RE, "must be key_ followed by 12 hex digits"),
    "followup_id": (FOLLOWUP_ID_RE, "must be 1-128 characters of A-Za-z0-9._:~-"),
}


class Identifier(fields.String):
    """A caller-chosen id: 1-64 characters of A-Za-z0-9._:-"""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault("pattern", ID_PATTERN)
        super().__init__(
            validate=validate.Regexp(ID_RE, error="must be 1-64 characters of A-Za-z0-9._:-"),
            **kwargs,
        )


class DecimalText(fields.String):
    """A decimal number written as a string; a JSON number is refused (money is never a float)."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = kwargs.setdefault("metadata", {})
        metadata.setdefault("pattern", DECIMAL_RE.pattern)
        metadata.setdefault("example", "120.00")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError('must be a decimal string such as "12.50", not a JSON number')
        if not DECIMAL_RE.match(value):
            raise ValidationError('must be a decimal string such as "12.50"')
        return value

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else str(value)


class Money(DecimalText):
    """An amount of the program currency; positivity and precision are the ledger's rules."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return Decimal(super()._deserialize(value, attr, data, **kwargs))


class Instant(fields.DateTime):
    """An RFC 3339 time with its UTC offset; a time without one is ambiguous and refused."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault("example", "2026-11-23T10:00:00+00:00")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("must be an RFC 3339 time string")
        match = INSTANT_RE.match(value)
        if match is None:
            raise ValidationError("must be an RFC 3339 time such as 2026-11-23T10:00:00+00:00")
        if match.group("offset") is None:
            raise ValidationError("must include a UTC offset, e.g. 2026-11-23T10:00:00+00:00")
        try:
            return datetime.fromisoformat(value.upper().replace(" ", "T"))
        except ValueError:
            raise ValidationError("is not a valid date and time") from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return str(value.isoformat())


class Count(fields.Integer):
    """A whole number in JSON; 1.0, "1" and true are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return int(super()._validated(value))


def position_query(description: str, **kwargs: Any) -> fields.Integer:
    """A position of the event log in a query: 0 to the largest a store can hold (2**63 - 1)."""
    return fields.Integer(
        validate=validate.Range(min=0, max=MAX_POSITION),
        metadata={"description": description},
        **kwargs,
    )


def rule_number(path: str) -> Count:
    """A whole-number program rule, with the bounds the ledger checks it against."""
    low, high = WHOLE_NUMBER_BOUNDS[path]
    return Count(required=True, validate=validate.Range(min=low, max=high))


class StrictBody(Schema):
    class Meta:
        unknown = RAISE


# Requests.


class EnrolmentRequest(StrictBody):
    member_id = Identifier(required=True)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(allow_none=True, validate=validate.Length(min=1, max=200))
    referral_code = fields.String(allow_none=True, validate=validate.Length(min=1, max=32))
    enrolled_at = Instant(
        metadata={
            "description": "when the shop enrolled the customer (default: now); past allowed, "
            "not more than 5 minutes ahead: the member's business time starts there"
        }
    )


WRITE_POSITION = (
    "where in the event log this was recorded: pass it as `?after=` to a read to see this write "
    "(for a repeat, a position at or after the original's)"
)


def position_field(description: str = WRITE_POSITION, **kwargs: Any) -> fields.Integer:
    """A position of the event log in a response."""
    return fields.Integer(
        validate=validate.Range(min=0, max=MAX_POSITION),
        metadata={"description": description},
        **kwargs,
    )


class ReadQuery(Schema):
    after = position_query(
        "a position returned by a write: wait (briefly) until the read models have applied it, "
        "so the answer includes that write"
    )


class StatusQuery(ReadQuery):
    as_of = Instant(metadata={"description": "the status as it was at this instant"})


class EventsQuery(Schema):
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "page size, 1-1000"},
    )
    cursor = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "the `next` of the previous page"},
    )


class ReferralQuery(EventsQuery, ReadQuery):
    """A page of referrals, optionally as of a write's position."""


class TokenRequest(StrictBody):
    ttl_seconds = Count(
        validate=validate.Range(min=1, max=86400),
        metadata={"description": "lifetime of the token; default 3600"},
    )


class TokenRevocationRequest(StrictBody):
    """Nothing to say: every token of the member issued before now is refused."""


class KeyRequest(StrictBody):
    name = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=MAX_KEY_NAME),
            validate.Regexp(r"(?s).*\S", error="must not be blank"),
        ],
        metadata={"description": f"who the key is for: 1-{MAX_KEY_NAME} characters, not blank"},
    )
    role = fields.String(required=True, validate=validate.OneOf(KEY_ROLES))
    expires_at = Instant(
        allow_none=True,
        metadata={"description": "when the key stops working (in the future); default never"},
    )


class KeysQuery(EventsQuery):
    """A page of keys, oldest first."""


class RedemptionRequest(StrictBody):
    redemption_id = Identifier(required=True)
    reward = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "a reward id from the program's catalogue"},
    )
    points = Count(
        allow_none=True,
        validate=validate.Range(min=1, max=100_000_000),
        metadata={"description": "a plain number of points, instead of a reward"},
    )

    @validates_schema
    def one_of_reward_or_points(self, data: dict[str, Any], **_: Any) -> None:
        given = [name for name in ("reward", "points") if data.get(name) is not None]
        if len(given) != 1:
            raise ValidationError("give exactly one of reward or points", "reward")


class LineItemSchema(StrictBody):
    sku = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    quantity = Count(required=True, validate=validate.Range(min=1, max=1_000_000))
    unit_price = Money(required=True)


class PurchaseRequest(StrictBody):
    order_id = Identifier(required=True)
    member_id = Identifier(required=True)
    amount = Money(required=True)
    currency = fields.String(
        required=True,
        validate=validate.Regexp(CURRENCY_RE, error="must be a three-letter ISO 4217 code"),
        metadata={"example": "USD"},
    )
    occurred_at = Instant(allow_none=True)
    items = fields.List(
        fields.Nested(LineItemSchema), allow_none=True, validate=validate.Length(max=1000)
    )
    guarantee = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))


class ClaimRequest(StrictBody):
    claim_id = Identifier(required=True)
    evidence = fields.String(
        allow_none=True,
        validate=validate.Length(max=10_000),
        metadata={"description": "why the customer is not satisfied; required by some policies"},
    )


class ClaimRecorded(Schema):
    claim_id = fields.String()
    order_id = fields.String()
    member_id = fields.String()
    policy = fields.String()
    refund_percent = fields.Integer()
    evidence = fields.String(allow_none=True)
    refunded_amount = DecimalText()
    payout = DecimalText(metadata={"description": "unrefunded amount x percent, half-even"})
    currency = fields.String()
    points_clawed_back = fields.Integer()
    claimed_at = Instant()
    recorded_at = Instant()
    tier = fields.String()
    tier_changed = fields.Boolean()


class ClaimResponse(ClaimRecorded):
    position = position_field()


class RefundRequest(StrictBody):
    refund_id = Identifier(required=True)
    amount = Money(allow_none=True, metadata={"description": "default: the rest of the order"})
    reason = fields.String(allow_none=True, validate=validate.Length(max=500))


# Import records (histories from before Daifuku): the fields of the single requests, the
# record's kind, its business time (required: history has dates), and optionally the line it
# had in the original file (sent by `daifuku import --url`, so causes and reports name it).

IMPORT_KINDS = ("member", "purchase", "refund", "redemption")


class ImportFields(StrictBody):
    kind = fields.String(required=True, validate=validate.OneOf(IMPORT_KINDS))
    line = Count(
        validate=validate.Range(min=1, max=MAX_POSITION),
        metadata={"description": "its line in the original file (default: in this body)"},
    )


class ImportMember(ImportFields, EnrolmentRequest):
    enrolled_at = Instant(required=True)


class ImportPurchase(ImportFields, PurchaseRequest):
    occurred_at = Instant(required=True)


class ImportRefund(ImportFields, RefundRequest):
    order_id = Identifier(required=True)
    occurred_at = Instant(required=True)


class ImportRedemption(ImportFields, RedemptionRequest):
    member_id = Identifier(required=True)
    occurred_at = Instant(required=True)


IMPORT_SCHEMAS: dict[str, type[Schema]] = {
    "member": ImportMember,
    "purchase": ImportPurchase,
    "refund": ImportRefund,
    "redemption": ImportRedemption,
}


# Program rules: the same shape in GET and PUT, checked as a whole by the ledger.


class EarningRules(StrictBody):
    points_per_currency_unit = rule_number("earning.points_per_currency_unit")
    cross_sell_bonus = rule_number("earning.cross_sell_bonus")
    return_window_days = rule_number("earning.return_window_days")
    lot_lifetime_days = rule_number("earning.lot_lifetime_days")
    point_value = DecimalText(required=True)


class LifecycleRules(StrictBody):
    dormant_days = rule_number("lifecycle.dormant_days")
    lost_days = rule_number("lifecycle.lost_days")


class TierRules(StrictBody):
    name = fields.String(required=True)
    threshold = DecimalText(required=True)
    multiplier = DecimalText(required=True)


class GuaranteeRules(StrictBody):
    name = fields.String(required=True)
    refund_percent = rule_number("guarantees.*.refund_percent")
    window_days = rule_number("guarantees.*.window_days")
    evidence_required = fields.Boolean(required=True, truthy={True}, falsy={False})


class RewardRules(StrictBody):
    id = fields.String(required=True)
    name = fields.String(required=True)
    points = rule_number("rewards.*.points")


class ReferralRules(StrictBody):
    referrer_points = rule_number("referrals.referrer_points")
    referee_points = rule_number("referrals.referee_points")
    qualifying_amount = DecimalText(required=True)
    cap = rule_number("referrals.cap")
    cap_days = rule_number("referrals.cap_days")


class NoticeRules(StrictBody):
    expiry_notice_days = rule_number("notices.expiry_notice_days")
    guarantee_notice_days = rule_number("notices.guarantee_notice_days")


class ProgramRulesSchema(StrictBody):
    currency = fields.String(required=True, metadata={"example": "USD"})
    earning = fields.Nested(EarningRules, required=True)
    tier_period_days = rule_number("tier_period_days")
    lifecycle = fields.Nested(LifecycleRules, required=True)
    tiers = fields.List(fields.Nested(TierRules), required=True)
    guarantees = fields.List(fields.Nested(GuaranteeRules), required=True)
    rewards = fields.List(fields.Nested(RewardRules), required=True)
    referrals = fields.Nested(ReferralRules, required=True)
    notices = fields.Nested(
        NoticeRules,
        metadata={
            "description": "days before a lot expires or a guarantee window closes that the "
            "member is told (points.expiring, guarantee.expiring); 0: no notice. Absent: 30 and 7"
        },
    )


# Responses.


class NextTier(Schema):
    name = fields.String()
    spend_needed = DecimalText()


class TierStatus(Schema):
    name = fields.String()
    since = Instant(allow_none=True)
    review_at = Instant(allow_none=True)
    qualifying_spend = DecimalText()
    next = fields.Nested(NextTier, allow_none=True)
    spend_to_keep = DecimalText()


class PendingLot(Schema):
    points = fields.Integer()
    available_at = Instant()


class PointsStatus(Schema):
    available = fields.Integer()
    pending = fields.Integer()
    lifetime_earned = fields.Integer()
    clawed_back = fields.Integer()
    redeemed = fields.Integer()
    expired = fields.Integer()
    pending_lots = fields.List(fields.Nested(PendingLot))


class MemberStatus(Schema):
    member_id = fields.String()
    email = fields.String(
        allow_none=True, metadata={"description": "null once the personal data is erased"}
    )
    name = fields.String(allow_none=True)
    personal_data = fields.String(
        metadata={
            "enum": ["held", "erased"],
            "description": "whether the member's email and name are still held (they are kept "
            "encrypted under a key of the member's own; an erasure destroys the key)",
        }
    )
    enrolled_at = Instant()
    stage = fields.String(
        metadata={"enum": ["prospect", "new", "repeat", "loyal", "dormant", "lost"]}
    )
    tier = fields.Nested(TierStatus)
    points = fields.Nested(PointsStatus)
    referral_code = fields.String()
    as_of = Instant()


class ReferralView(Schema):
    referee_id = fields.String()
    referrer_id = fields.String()
    code = fields.String()
    state = fields.String(
        metadata={"description": "registered, qualified, rewarded, voided or capped"}
    )
    registered_at = Instant()
    qualified_at = Instant(allow_none=True)
    rewarded_at = Instant(allow_none=True)
    voided_at = Instant(allow_none=True)
    capped_at = Instant(allow_none=True)
    qualifying_order_id = fields.String(allow_none=True)
    reward_available_at = Instant(allow_none=True)
    referrer_points = fields.Integer()
    referee_points = fields.Integer()
    terms = fields.Dict(keys=fields.String(), metadata={"description": "the terms it keeps"})
    causes = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "step -> cause"}
    )


class ReferralPage(Schema):
    items = fields.List(fields.Nested(ReferralView))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


class Actor(Schema):
    """Who did it: an API key, a member (through a member token), the scheduler, an import, or
    the system itself."""

    kind = fields.String(metadata={"enum": ["key", "member", "scheduler", "import", "system"]})
    id = fields.String(metadata={"description": "the API key's id (kind key)"})
    name = fields.String(metadata={"description": "the key's or the import's name"})
    role = fields.String(metadata={"description": "the key's role (kind key)"})
    member_id = fields.String(metadata={"description": "the member (kind member)"})


def actor_field() -> fields.Nested:
    return fields.Nested(
        Actor,
        allow_none=True,
        metadata={"description": "who did it; null for events recorded before actors were"},
    )


class MemberEvent(Schema):
    version = fields.Integer()
    type = fields.String()
    recorded_at = Instant()
    occurred_at = Instant(allow_none=True)
    actor = actor_field()
    data = fields.Dict(keys=fields.String())


class MemberEventPage(Schema):
    items = fields.List(fields.Nested(MemberEvent))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


class MemberToken(Schema):
    token = fields.String()
    expires_at = Instant()


class TokenRevocation(Schema):
    member_id = fields.String()
    revoked_before = Instant(
        metadata={"description": "every token of the member issued before this is refused"}
    )


class KeyView(Schema):
    key_id = fields.String(
        metadata={"pattern": KEY_ID_PATTERN, "description": "public; not a secret"}
    )
    name = fields.String()
    role = fields.String(metadata={"enum": list(KEY_ROLES)})
    state = fields.String(metadata={"enum": ["active", "expired", "revoked"]})
    created_at = Instant()
    last_used_at = Instant(
        allow_none=True, metadata={"description": "approximate: noted at most once a minute"}
    )
    expires_at = Instant(allow_none=True)
    revoked_at = Instant(allow_none=True)


class KeyCreated(KeyView):
    secret = fields.String(
        metadata={"description": "the bearer credential (dfk_...); shown only in this answer"}
    )


class KeyPage(Schema):
    items = fields.List(fields.Nested(KeyView))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


class GuaranteeTerms(Schema):
    policy = fields.String()
    refund_percent = fields.Integer()
    expires_at = Instant()


class PurchaseRecorded(Schema):
    order_id = fields.String()
    member_id = fields.String()
    amount = DecimalText()
    currency = fields.String()
    occurred_at = Instant()
    recorded_at = Instant()
    program_version = fields.Integer()
    points_awarded = fields.Integer()
    bonus_points = fields.Integer()
    points_available_at = Instant(allow_none=True)
    tier = fields.String()
    tier_changed = fields.Boolean()
    guarantee = fields.Nested(GuaranteeTerms, allow_none=True)
    position = position_field()


class LineItemView(Schema):
    sku = fields.String()
    category = fields.String()
    quantity = fields.Integer()
    unit_price = DecimalText()


class RefundView(Schema):
    refund_id = fields.String()
    order_id = fields.String()
    amount = DecimalText()
    reason = fields.String(allow_none=True)
    occurred_at = Instant()
    recorded_at = Instant()
    points_clawed_back = fields.Integer()


class RefundRecorded(RefundView):
    refunded_total = DecimalText()
    refundable_amount = DecimalText()
    tier = fields.String()
    tier_changed = fields.Boolean()
    position = position_field()


class GuaranteeView(GuaranteeTerms):
    evidence_required = fields.Boolean()


class PurchaseView(Schema):
    order_id = fields.String()
    member_id = fields.String()
    amount = DecimalText()
    currency = fields.String()
    occurred_at = Instant()
    effective_at = Instant()
    recorded_at = Instant()
    program_version = fields.Integer()
    items = fields.List(fields.Nested(LineItemView))
    points_awarded = fields.Integer()
    bonus_points = fields.Integer()
    points_clawed_back = fields.Integer()
    points_available_at = Instant(allow_none=True)
    refunded_amount = DecimalText()
    refundable_amount = DecimalText()
    refunds = fields.List(fields.Nested(RefundView))
    guarantee = fields.Nested(GuaranteeView, allow_none=True)
    claim = fields.Nested(ClaimRecorded, allow_none=True)


class RedemptionView(Schema):
    redemption_id = fields.String()
    member_id = fields.String()
    points = fields.Integer()
    reward = fields.String(allow_none=True)
    redeemed_at = Instant()
    cancelled_at = Instant(allow_none=True)
    points_available = fields.Integer(metadata={"description": "the member's balance afterwards"})
    position = position_field()


class ProgramView(Schema):
    version = fields.Integer()
    published_at = Instant()
    rules = fields.Nested(ProgramRulesSchema)


class ReadModelsHealth(Schema):
    position = position_field("the last event the views have applied")
    behind = fields.Integer(metadata={"description": "events recorded but not yet applied"})


class Health(Schema):
    status = fields.String(metadata={"example": "ok"})
    database = fields.String(metadata={"example": "ok"})
    read_models = fields.Nested(
        ReadModelsHealth, metadata={"description": "absent when reads come from the ledger"}
    )


class ProblemSchema(Schema):
    type = fields.String(metadata={"example": DOMAIN_PROBLEMS[InsufficientPoints].uri})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "for invalid input: messages by dotted field path"},
    )
