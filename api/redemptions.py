"""Redemptions: a storefront may cancel one and give the points back."""

from __future__ import annotations

from typing import Any

from api import representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import answer, cause, ledger
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
    written = ledger().cancel_redemption(redemption_id, cause=cause())
    return answer(written, representations.redemption)
