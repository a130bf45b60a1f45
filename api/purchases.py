"""Purchases and their refunds."""

from __future__ import annotations

from typing import Any

from api import reads, representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import answer, cause, ledger
from api.schemas import (
    ClaimRequest,
    ClaimResponse,
    PurchaseRecorded,
    PurchaseRequest,
    PurchaseView,
    ReadQuery,
    RefundRecorded,
    RefundRequest,
)
from domain.members import LineItem

blp = ApiBlueprint(
    "purchases",
    __name__,
    url_prefix="/v1/purchases",
    description="Purchases earn points; refunds claw back what was actually awarded.",
)


@blp.route("", methods=["POST"])
@allow("storefront")
@blp.arguments(PurchaseRequest())
@blp.response(201, PurchaseRecorded, description="Recorded")
@blp.alt_response(200, schema=PurchaseRecorded, description="Already recorded with the same data")
def record_purchase(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Record a purchase and award its points (pending until the return window ends)"""
    items = body.get("items")
    written = ledger().record_purchase(
        order_id=body["order_id"],
        member_id=body["member_id"],
        amount=body["amount"],
        currency=body["currency"],
        occurred_at=body.get("occurred_at"),
        items=None if items is None else [LineItem(**item) for item in items],
        guarantee=body.get("guarantee"),
        cause=cause(),
    )
    return answer(written, representations.recorded_purchase)


@blp.route("/<id:order_id>")
@allow("storefront", "auditor")
@blp.arguments(ReadQuery(), location="query")
@blp.response(200, PurchaseView)
def purchase(query: dict[str, Any], order_id: str) -> dict[str, Any]:
    """A purchase with its refunds, guarantee, claim and points"""
    return reads.purchase(order_id, query.get("after"))


@blp.route("/<id:order_id>/refunds", methods=["POST"])
@allow("storefront")
@blp.arguments(RefundRequest())
@blp.response(201, RefundRecorded, description="Refunded")
@blp.alt_response(200, schema=RefundRecorded, description="Already refunded with the same data")
def refund(body: dict[str, Any], order_id: str) -> tuple[dict[str, Any], int]:
    """Refund part or (by default) the rest of an order; points are clawed back pro rata"""
    refund_id = body["refund_id"]
    written = ledger().refund(
        order_id,
        refund_id,
        amount=body.get("amount"),
        reason=body.get("reason"),
        cause=cause(),
    )
    return answer(written, lambda bought: representations.recorded_refund(bought, refund_id))


@blp.route("/<id:order_id>/guarantee-claims", methods=["POST"])
@allow("storefront")
@blp.arguments(ClaimRequest())
@blp.response(201, ClaimResponse, description="Claimed: refunded and paid out")
@blp.alt_response(200, schema=ClaimResponse, description="Already claimed with the same data")
def claim(body: dict[str, Any], order_id: str) -> tuple[dict[str, Any], int]:
    """Claim the purchase's guarantee inside its window: payout, refund and clawback"""
    written = ledger().claim_guarantee(
        order_id, body["claim_id"], evidence=body.get("evidence"), cause=cause()
    )
    return answer(written, representations.claim)
