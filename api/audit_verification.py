"""The auditor asks the system to prove its read models are exactly what the history says."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from adapters.verification import verify_member_status
from adapters.views import open_member_status_view
from api import representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import ledger
from api.problems import Problem
from api.schemas import position_field

blp = ApiBlueprint(
    "audit_verification",
    __name__,
    url_prefix="/v1/audit/verifications",
    description="Replays the whole history into fresh views and compares them with the live ones.",
)


class MismatchSchema(Schema):
    member_id = fields.String()
    field = fields.String(metadata={"description": "dotted status field, `version` or `row`"})
    live = fields.Raw(allow_none=True)
    replayed = fields.Raw(allow_none=True)


class VerificationSchema(Schema):
    events = fields.Integer(metadata={"description": "events replayed"})
    members = fields.Integer(metadata={"description": "members in the replayed view"})
    position = position_field(
        "the live view's position; null if it was never built", allow_none=True
    )
    live_view = fields.String()
    mismatches = fields.List(fields.Nested(MismatchSchema))


@blp.route("", methods=["POST"])
@allow("auditor")
@blp.response(200, VerificationSchema)
def verify() -> dict[str, Any]:
    """Replay the history up to the live view's position and compare, member by member"""
    found = ledger()
    try:
        live = open_member_status_view(found.env)
    except ValueError as error:
        raise Problem(503, f"the read models cannot be verified here: {error}") from None
    try:
        return verify_member_status(found, live, representations).to_dict()
    finally:
        live.close()
