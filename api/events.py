"""The global ordered event log, for auditors."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import ledger
from api.schemas import Instant, actor_field, position_field, position_query

blp = ApiBlueprint(
    "events",
    __name__,
    url_prefix="/v1/events",
    description="Every event of the ledger in the order it was recorded, with its position.",
)


class LogQuery(Schema):
    after = position_query("the position of the last event already read", load_default=0)
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "page size, 1-1000"},
    )


class LoggedEvent(Schema):
    position = position_field("where in the log the event was recorded")
    type = fields.String()
    aggregate = fields.String()
    member_id = fields.String(allow_none=True)
    recorded_at = Instant()
    actor = actor_field()
    occurred_at = Instant(allow_none=True)
    data = fields.Dict(keys=fields.String())


class LogPage(Schema):
    items = fields.List(fields.Nested(LoggedEvent))
    next = position_field("pass back as ?after= for the next page", allow_none=True)


@blp.route("")
@allow("auditor")
@blp.arguments(LogQuery(), location="query")
@blp.response(200, LogPage)
def log(query: dict[str, Any]) -> dict[str, Any]:
    """The global ordered log, a page at a time"""
    limit: int = query["limit"]
    found = ledger().event_log(after=query["after"], limit=limit + 1)
    page = found[:limit]
    return {"items": page, "next": page[-1]["position"] if len(found) > limit else None}
