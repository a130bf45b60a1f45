"""Redemptions: a storefront may cancel one and give the points back."""

from __future__ import annotations

from typing import Any

from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import cause, ledger, with_position
from api.schemas import RedemptionView

blp = ApiBlueprint(
    "redemptions",
    __name__,
    url_prefix="/v1/redemptions",
    description="Cancelling a redemption returns its points as a lot with the original expiry.",
)


@blp.route("/<id:redemption_id>/cancellation", methods=["POST"])
@allow("storefront")
@blp.response(201, RedemptionView, description="Cancelled")
@blp.alt_response(200, schema=RedemptionView, description="Already cancelled")
def cancel(redemption_id: str) -> tuple[dict[str, Any], int]:
    """Cancel a redemption and give its points back"""
    redemption, created = ledger().cancel_redemption(redemption_id, cause=cause())
    return with_position(redemption), 201 if created else 200
