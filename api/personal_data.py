"""A member's personal data: everything held about them, and its erasure (crypto-shredding)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from api import reads, representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import cause, ledger
from api.schemas import (
    Instant,
    MemberEvent,
    MemberStatus,
    PurchaseView,
    RedemptionView,
    ReferralView,
    actor_field,
)

blp = ApiBlueprint(
    "personal-data",
    __name__,
    url_prefix="/v1/members",
    description="Email and name are kept encrypted under a key of the member's own; an erasure "
    "destroys that key, so they are gone for good while the ledger keeps the member's history.",
)


class ReferredBy(Schema):
    referrer_id = fields.String()
    code = fields.String()


class PersonalDataReport(Schema):
    member_id = fields.String()
    personal_data = fields.String(metadata={"enum": ["held", "erased"]})
    email = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    enrolled_at = Instant()
    referral_code = fields.String()
    referred_by = fields.Nested(ReferredBy, allow_none=True)
    status = fields.Nested(MemberStatus)
    purchases = fields.List(fields.Nested(PurchaseView))
    redemptions = fields.List(fields.Nested(RedemptionView))
    referrals = fields.List(fields.Nested(ReferralView))
    events = fields.List(fields.Nested(MemberEvent))


class ErasureReceipt(Schema):
    member_id = fields.String()
    personal_data = fields.String(metadata={"enum": ["erased"]})
    erased = fields.List(fields.String(), metadata={"description": "the fields erased"})
    erased_at = Instant()
    actor = actor_field()


@blp.route("/<id:member_id>/personal-data")
@allow(member="member_id")
@blp.response(200, PersonalDataReport)
def report(member_id: str) -> dict[str, Any]:
    """Everything held about the member: its personal data, status, purchases, redemptions,
    referrals and every event of its ledger"""
    found = ledger()
    member = found.member_copy(member_id)
    events: list[dict[str, Any]] = []
    while True:
        page = found.member_events(member_id, after=len(events), limit=1000)
        events.extend(page)
        if len(page) < 1000:
            break
    status_now = reads.opened(representations.status(found.member_status(member_id)))
    return representations.personal_data(member, found.personal_data(member), status_now, events)


@blp.route("/<id:member_id>/personal-data", methods=["DELETE"])
@allow()
@blp.response(200, ErasureReceipt, description="Erased (the same receipt when asked again)")
def erase(member_id: str) -> dict[str, Any]:
    """Erase the member's email and name by destroying its data key; points, tier and history
    stay, and the hash-chained export and replays still verify"""
    written = ledger().erase_personal_data(member_id, cause=cause())
    return representations.erasure(written.value)
