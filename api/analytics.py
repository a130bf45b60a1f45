"""Analytics for finance and marketing: what open promises could cost, how referrals convert."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import ledger
from api.schemas import DecimalText, Instant

blp = ApiBlueprint(
    "analytics",
    __name__,
    url_prefix="/v1/analytics",
    description="Figures folded from the ledger's events, as of now or a past instant.",
)


class SummaryQuery(Schema):
    as_of = Instant(metadata={"description": "the figures as they were at this instant"})


class PolicyFigures(Schema):
    guaranteed_purchases = fields.Integer()
    open = fields.Integer(metadata={"description": "unclaimed, inside the window, unrefunded"})
    max_payout = DecimalText(metadata={"description": "the liability if every open one claims"})
    claims = fields.Integer()
    payouts = DecimalText()
    claim_rate = fields.Float()


class GuaranteeFigures(PolicyFigures):
    by_policy = fields.Dict(keys=fields.String(), values=fields.Nested(PolicyFigures))


class ReferralFunnel(Schema):
    registered = fields.Integer()
    qualified = fields.Integer()
    rewarded = fields.Integer()
    voided = fields.Integer()
    capped = fields.Integer()
    qualification_rate = fields.Float()
    reward_rate = fields.Float()


class Summary(Schema):
    as_of = Instant()
    currency = fields.String()
    guarantees = fields.Nested(GuaranteeFigures)
    referrals = fields.Nested(ReferralFunnel)


@blp.route("/summary")
@allow("auditor")
@blp.arguments(SummaryQuery, location="query")
@blp.response(200, Summary)
def summary(query: dict[str, Any]) -> dict[str, Any]:
    """Guarantee liability per policy, claims and payouts, and the referral funnel"""
    return ledger().analytics_summary(as_of=query.get("as_of"))
