"""Members: enrolment, status, event history, member tokens (and their revocation), redemptions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from adapters.keys import mint_member_token
from api import cursors, reads, representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import answer, backend, cause, ledger
from api.schemas import (
    EnrolmentRequest,
    EventsQuery,
    MemberEventPage,
    MemberStatus,
    MemberToken,
    RedemptionRequest,
    RedemptionView,
    ReferralPage,
    ReferralQuery,
    StatusQuery,
    TokenRequest,
    TokenRevocation,
    TokenRevocationRequest,
)
from domain.eventlog import MAX_POSITION

blp = ApiBlueprint(
    "members",
    __name__,
    url_prefix="/v1/members",
    description="Enrolment, status (now or as of an instant), history, tokens and redemptions.",
)
CURSOR_PREFIX = "after:"


@blp.route("", methods=["POST"])
@allow("storefront")
@blp.arguments(EnrolmentRequest())
@blp.response(201, MemberStatus, description="Enrolled")
@blp.alt_response(200, schema=MemberStatus, description="Already enrolled with the same data")
def enrol(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Enrol a member under the storefront's own customer id"""
    written = ledger().enrol(
        body["member_id"],
        body["email"],
        body.get("name"),
        cause=cause(),
        referral_code=body.get("referral_code"),
        enrolled_at=body.get("enrolled_at"),
    )
    return reads.opened(representations.status(written.value)), 201 if written.created else 200


@blp.route("/<id:member_id>")
@allow("storefront", "auditor", member="member_id")
@blp.arguments(StatusQuery(), location="query")
@blp.response(200, MemberStatus)
def status(query: dict[str, Any], member_id: str) -> dict[str, Any]:
    """A member's tier, points and stage, now or as of a past instant"""
    as_of = query.get("as_of")
    if as_of is not None:
        return reads.opened(representations.status(ledger().member_status(member_id, as_of=as_of)))
    return reads.member_status(member_id, query.get("after"))


@blp.route("/<id:member_id>/events")
@allow("auditor", member="member_id")
@blp.arguments(EventsQuery(), location="query")
@blp.response(200, MemberEventPage)
def events(query: dict[str, Any], member_id: str) -> dict[str, Any]:
    """The member's events, oldest first, a page at a time"""
    limit: int = query["limit"]
    after = _read_cursor(query.get("cursor"))
    found = ledger().member_events(member_id, after=after, limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return {"items": page, "next": _cursor(page[-1]["version"]) if more else None}


@blp.route("/<id:member_id>/referrals")
@allow("storefront", "auditor", member="member_id")
@blp.arguments(ReferralQuery(), location="query")
@blp.response(200, ReferralPage)
def referrals(query: dict[str, Any], member_id: str) -> dict[str, Any]:
    """The referrals a member made, with their states and rewards, in enrolment order"""
    limit: int = query["limit"]
    after = _read_cursor(query.get("cursor"))
    found = reads.referrals(member_id, query.get("after"), after, limit + 1)
    page = found[:limit]
    more = len(found) > limit
    for item in page:
        item.pop("seq")
    return {"items": page, "next": _cursor(after + limit) if more else None}


@blp.route("/<id:member_id>/tokens", methods=["POST"])
@allow("storefront")
@blp.arguments(TokenRequest())
@blp.response(201, MemberToken)
def mint_token(body: dict[str, Any], member_id: str) -> dict[str, Any]:
    """Mint a token that lets a member's own page act for that member until it expires"""
    ledger().member_status(member_id)  # an unknown member is a 404, not a token
    found = backend()
    ttl = body.get("ttl_seconds", found.token_ttl_seconds)
    expires_at = (found.clock.now() + timedelta(seconds=ttl)).replace(microsecond=0)
    token = mint_member_token(
        found.token_secret, member_id, expires_at, issued_at=found.clock.now()
    )
    return {"token": token, "expires_at": expires_at}


@blp.route("/<id:member_id>/tokens/revocations", methods=["POST"])
@allow("storefront")
@blp.arguments(TokenRevocationRequest())
@blp.response(201, TokenRevocation)
def revoke_tokens(body: dict[str, Any], member_id: str) -> dict[str, Any]:
    """Refuse every member token of the member issued before now, in every server process
    within a second (tokens minted afterwards work)"""
    ledger().member_status(member_id)  # an unknown member is a 404
    found = backend()
    revoked_before = found.keys.revoke_member_tokens(member_id, at=found.clock.now())
    return {"member_id": member_id, "revoked_before": revoked_before}


@blp.route("/<id:member_id>/redemptions", methods=["POST"])
@allow("storefront", member="member_id")
@blp.arguments(RedemptionRequest())
@blp.response(201, RedemptionView, description="Redeemed")
@blp.alt_response(200, schema=RedemptionView, description="Already redeemed with the same data")
def redeem(body: dict[str, Any], member_id: str) -> tuple[dict[str, Any], int]:
    """Spend available points on a reward or a plain number of points (oldest lots first)"""
    written = ledger().redeem(
        member_id,
        body["redemption_id"],
        reward=body.get("reward"),
        points=body.get("points"),
        cause=cause(),
    )
    return answer(written, representations.redemption)


def _cursor(version: int) -> str:
    return cursors.encode(f"{CURSOR_PREFIX}{version}")


def _read_cursor(cursor: str | None) -> int:
    def parse(text: str) -> int | None:
        if not text.startswith(CURSOR_PREFIX):
            return None
        after = int(text.removeprefix(CURSOR_PREFIX))
        return after if 0 <= after <= MAX_POSITION else None

    return cursors.decode(cursor, parse) if cursor else 0
