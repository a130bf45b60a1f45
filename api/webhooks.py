"""Webhook subscriptions, their deliveries and replays, for admins (deliveries also auditors).

Messages follow the Standard Webhooks specification: verify them with any of its libraries and
the secret shown when the subscription was made (or rotated).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from adapters.webhook_outbox import STATES
from adapters.webhook_urls import MAX_URL_LENGTH
from adapters.webhooks import UnknownWebhook, WebhookDisabled, WebhookRefused, Webhooks
from api import cursors
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend, cause
from api.problems import UNKNOWN_WEBHOOK, WEBHOOK_DISABLED, Problem, invalid
from api.schemas import EventsQuery, Instant, StrictBody, position_field
from domain.eventlog import MAX_POSITION
from domain.webhooks import TYPE_NAMES, WILDCARD, Subscription

blp = ApiBlueprint(
    "webhooks",
    __name__,
    url_prefix="/v1/webhooks",
    description="Endpoints of the shop's that receive every ledger change of the types they "
    "name, signed (Standard Webhooks) and at least once; the same event always has the same "
    "`webhook-id`. Types: " + ", ".join(TYPE_NAMES) + ".",
)


def types_field(**kwargs: Any) -> fields.List[Any]:
    """A subscription's types (checked against the table by ``check_types``)."""
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=len(TYPE_NAMES)),
        metadata={
            "description": f'event types, or ["{WILDCARD}"] for all: ' + ", ".join(TYPE_NAMES)
        },
        **kwargs,
    )


class WebhookRequest(StrictBody):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_LENGTH),
        metadata={
            "description": "https:// (http and private addresses only when the server "
            "allows them: DAIFUKU_WEBHOOKS_ALLOW_PRIVATE=1)"
        },
    )
    types = types_field(required=True)
    description = fields.String(allow_none=True, validate=validate.Length(max=500))
    include_imports = fields.Boolean(
        load_default=False,
        metadata={"description": "also send the history an import brought in; default false"},
    )


class WebhookChange(StrictBody):
    url = fields.String(validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    types = types_field()
    description = fields.String(allow_none=True, validate=validate.Length(max=500))
    include_imports = fields.Boolean()
    enabled = fields.Boolean(
        metadata={"description": "false stops deliveries (they wait); true sends them again"}
    )


class WebhookView(Schema):
    id = fields.String()
    url = fields.String()
    types = fields.List(fields.String())
    description = fields.String(allow_none=True)
    include_imports = fields.Boolean()
    enabled = fields.Boolean()
    disabled_reason = fields.String(
        allow_none=True, metadata={"description": "why it was disabled: by whom, or its answers"}
    )
    disabled_at = Instant(allow_none=True)
    created_at = Instant()
    previous_secret_valid_until = Instant(
        allow_none=True,
        metadata={"description": "after a rotation, until when the old secret still signs"},
    )


class WebhookCreated(WebhookView):
    secret = fields.String(metadata={"description": "whsec_...: shown only in this answer"})


class WebhookPage(Schema):
    items = fields.List(fields.Nested(WebhookView))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


class RotatedSecret(Schema):
    id = fields.String()
    secret = fields.String(metadata={"description": "the new whsec_ secret, shown only now"})
    previous_secret_valid_until = Instant()


class DeliveriesQuery(EventsQuery):
    state = fields.String(validate=validate.OneOf(STATES))


class AttemptView(Schema):
    attempt = fields.Integer()
    at = Instant()
    status = fields.Integer(allow_none=True, metadata={"description": "the HTTP status, if any"})
    latency_ms = fields.Float()
    excerpt = fields.String(metadata={"description": "the response body's first 1,024 bytes"})
    error = fields.String(allow_none=True, metadata={"description": "timeout, refused, ..."})


class DeliveryView(Schema):
    webhook_id = fields.String(metadata={"description": "the message's webhook-id header"})
    position = position_field("the ledger event's position in the log")
    type = fields.String()
    member_id = fields.String()
    state = fields.String(validate=validate.OneOf(STATES))
    recorded_at = Instant()
    queued_at = Instant()
    delivered_at = Instant(allow_none=True)
    next_attempt_at = Instant(
        allow_none=True, metadata={"description": "when it is tried next (state pending)"}
    )
    attempts = fields.List(fields.Nested(AttemptView))


class DeliveryPage(Schema):
    items = fields.List(fields.Nested(DeliveryView))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


class ReplayRequest(StrictBody):
    after = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_POSITION),
        metadata={"description": "deliver again every event after this position"},
    )
    since = Instant(metadata={"description": "deliver again every event recorded from then"})

    @validates_schema
    def one_of(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("after" in data) == ("since" in data):
            raise ValidationError("give either after (a position) or since (a time)", "after")


class ReplayView(Schema):
    replay_id = fields.String()
    webhook = fields.String(metadata={"description": "the subscription's id"})
    after = position_field("events after this position are delivered again")
    until = position_field("up to this one: the log's last position when it was asked for")


def webhooks() -> Webhooks:
    found = backend().webhooks
    assert found is not None
    return found


@blp.route("")
@allow()
@blp.arguments(EventsQuery(), location="query")
@blp.response(200, WebhookPage)
def list_webhooks(query: dict[str, Any]) -> dict[str, Any]:
    """Every subscription, oldest first"""
    limit: int = query["limit"]
    book = webhooks()
    found = book.page(_read_cursor(query.get("cursor")), limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [view(s) for s in page],
        "next": _cursor(*book.cursor_of(page[-1])) if more else None,
    }


@blp.route("", methods=["POST"])
@allow()
@blp.arguments(WebhookRequest())
@blp.response(201, WebhookCreated, description="Subscribed; the secret is shown only here")
def subscribe(body: dict[str, Any]) -> dict[str, Any]:
    """Subscribe an endpoint: it receives every event of these types recorded from now on"""
    try:
        subscription, secret = webhooks().subscribe(
            body["url"],
            body["types"],
            body.get("description"),
            body["include_imports"],
            cause(),
        )
    except WebhookRefused as error:
        raise invalid(error.field, error.message) from None
    return {**view(subscription), "secret": secret}


@blp.route("/<id:webhook_id>")
@allow()
@blp.response(200, WebhookView)
@blp.doc(responses={"404": "NOT_FOUND"})
def read(webhook_id: str) -> dict[str, Any]:
    """A subscription"""
    return view(_get(webhook_id))


@blp.route("/<id:webhook_id>", methods=["PATCH"])
@allow()
@blp.arguments(WebhookChange())
@blp.response(200, WebhookView)
@blp.doc(responses={"404": "NOT_FOUND"})
def change(body: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    """Change the url, the types, the description, or enable and disable it"""
    try:
        return view(webhooks().change(webhook_id, dict(body), cause()))
    except UnknownWebhook as error:
        raise Problem(UNKNOWN_WEBHOOK, str(error)) from None
    except WebhookRefused as error:
        raise invalid(error.field, error.message) from None


@blp.route("/<id:webhook_id>", methods=["DELETE"])
@allow()
@blp.response(200, WebhookView, description="Removed: nothing more is sent; its secret is gone")
@blp.doc(responses={"404": "NOT_FOUND"})
def remove(webhook_id: str) -> dict[str, Any]:
    """Remove a subscription: deliveries still waiting are cancelled"""
    try:
        return view(webhooks().remove(webhook_id, cause()))
    except UnknownWebhook as error:
        raise Problem(UNKNOWN_WEBHOOK, str(error)) from None


@blp.route("/<id:webhook_id>/secret", methods=["POST"])
@allow()
@blp.response(200, RotatedSecret, description="The new secret, shown only here")
@blp.doc(responses={"404": "NOT_FOUND"})
def rotate(webhook_id: str) -> dict[str, Any]:
    """Rotate the secret: for 24 hours messages carry a signature by each secret"""
    try:
        subscription, secret = webhooks().rotate(webhook_id, cause())
    except UnknownWebhook as error:
        raise Problem(UNKNOWN_WEBHOOK, str(error)) from None
    return {
        "id": str(subscription.id),
        "secret": secret,
        "previous_secret_valid_until": subscription.previous_until,
    }


@blp.route("/<id:webhook_id>/deliveries")
@allow("auditor")
@blp.arguments(DeliveriesQuery(), location="query")
@blp.response(200, DeliveryPage)
@blp.doc(responses={"404": "NOT_FOUND"})
def deliveries(query: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    """An endpoint's deliveries, newest first, with every attempt"""
    _get(webhook_id)
    limit: int = query["limit"]
    cursor = query.get("cursor")
    before = None
    if cursor:
        if not cursor.isdigit() or int(cursor) > MAX_POSITION:
            raise invalid("cursor", "is not a cursor this API handed out")
        before = int(cursor)
    found = webhooks().outbox.deliveries(webhook_id, before, limit + 1, query.get("state"))
    page = found[:limit]
    return {
        "items": [_delivery(d) for d in page],
        "next": str(page[-1]["position"]) if len(found) > limit else None,
    }


@blp.route("/<id:webhook_id>/replays", methods=["POST"])
@allow()
@blp.arguments(ReplayRequest())
@blp.response(202, ReplayView, description="Accepted: the dispatcher sends them again")
@blp.doc(responses={"404": "NOT_FOUND", "409": "CONFLICT"})
def replay(body: dict[str, Any], webhook_id: str) -> tuple[dict[str, Any], int]:
    """Deliver again every event of its types after a position, or recorded since an instant,
    up to the log's last position now (with the same webhook-ids)"""
    book = webhooks()
    _get(webhook_id)
    after = body["after"] if "after" in body else book.position_before(body["since"])
    try:
        subscription, replay_id, until = book.replay(webhook_id, after, cause())
    except WebhookRefused as error:
        raise invalid(error.field, error.message) from None
    except WebhookDisabled as error:
        raise Problem(WEBHOOK_DISABLED, str(error)) from None
    return {
        "replay_id": replay_id,
        "webhook": str(subscription.id),
        "after": after,
        "until": until,
    }, 202


def view(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": str(subscription.id),
        "url": subscription.url,
        "types": subscription.types,
        "description": subscription.description,
        "include_imports": subscription.include_imports,
        "enabled": subscription.enabled,
        "disabled_reason": subscription.disabled_reason,
        "disabled_at": subscription.disabled_at,
        "created_at": subscription.created_on,
        "previous_secret_valid_until": subscription.previous_until,
    }


def _get(webhook_id: str) -> Subscription:
    try:
        return webhooks().get(webhook_id)
    except UnknownWebhook as error:
        raise Problem(UNKNOWN_WEBHOOK, str(error)) from None


def _instant(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "webhook_id": row["message_id"],
        "position": row["position"],
        "type": row["type"],
        "member_id": row["member_id"],
        "state": row["state"],
        "recorded_at": _instant(row["recorded_at"]),
        "queued_at": _instant(row["queued_at"]),
        "delivered_at": _instant(row["delivered_at"]),
        "next_attempt_at": _instant(row["next_attempt_at"]) if row["state"] == "pending" else None,
        "attempts": [{**a, "at": _instant(a["at"])} for a in row["attempt_list"]],
    }


def _cursor(created_at: float, endpoint_id: str) -> str:
    return cursors.encode(f"{created_at!r}|{endpoint_id}")


def _read_cursor(cursor: str | None) -> tuple[float, str] | None:
    def parse(text: str) -> tuple[float, str] | None:
        created, separator, endpoint_id = text.partition("|")
        return (float(created), endpoint_id) if separator and endpoint_id else None

    return cursors.decode(cursor, parse) if cursor else None
