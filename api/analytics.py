"""Analytics for finance and marketing: what open promises could cost, how referrals convert."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api import followup_effect, reads
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend, ledger
from api.members import _cursor, _read_cursor
from api.schemas import DecimalText, EventsQuery, Instant, position_field

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


class MembersFigures(Schema):
    total = fields.Integer()
    by_tier = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_stage = fields.Dict(keys=fields.String(), values=fields.Integer())


class PointsOutstanding(Schema):
    available = fields.Integer(metadata={"description": "points members can redeem now"})
    pending = fields.Integer(metadata={"description": "points inside their return window"})


class Summary(Schema):
    as_of = Instant()
    currency = fields.String()
    position = position_field(
        "the read models' position it was read at; none: the ledger", allow_none=True
    )
    refresh_pending = fields.Integer(
        metadata={
            "description": "members whose figures time alone changed (a lot matured, a stage "
            "threshold, a guarantee window closed) and the worker has not recomputed yet "
            "(counted up to 1,000)"
        }
    )
    members = fields.Nested(MembersFigures)
    points_outstanding = fields.Nested(PointsOutstanding)
    guarantees = fields.Nested(GuaranteeFigures)
    referrals = fields.Nested(ReferralFunnel)


@blp.route("/summary")
@allow("auditor")
@blp.arguments(SummaryQuery(), location="query")
@blp.response(200, Summary)
def summary(query: dict[str, Any]) -> dict[str, Any]:
    """Members by tier and stage, points outstanding, guarantee liability, referral funnel"""
    as_of = query.get("as_of")
    if as_of is not None:
        return {**ledger().analytics_summary(as_of=as_of), "position": None, "refresh_pending": 0}
    return reads.analytics_summary()


class MembersQuery(EventsQuery):
    as_of = Instant(metadata={"description": "the values as they were at this instant"})
    class_ = fields.String(
        data_key="class",
        validate=validate.OneOf(["A", "B", "C", "D"]),
        metadata={"description": "only the members of this value class"},
    )


class Rfm(Schema):
    recency_days = fields.Integer(metadata={"description": "whole days since the last purchase"})
    recency = fields.Integer(metadata={"description": "1-5 by quintile, 5 the most recent"})
    frequency = fields.Integer(metadata={"description": "1-5 by quintile of purchases"})
    monetary = fields.Integer(metadata={"description": "1-5 by quintile of net contribution"})


class MemberValue(Schema):
    member_id = fields.String()
    stage = fields.String()
    value_class = fields.String(
        allow_none=True, metadata={"description": "A-D by quartile; none without purchases"}
    )
    net_contribution = DecimalText(
        metadata={"description": "purchases - refunds - guarantee payouts - points redeemed"}
    )
    lifetime_value = DecimalText(metadata={"description": "realised: net contribution to date"})
    rfm = fields.Nested(Rfm, allow_none=True)
    purchases = fields.Integer()
    average_order_value = DecimalText(allow_none=True)
    purchases_per_year = fields.Float(metadata={"description": "per 365 days of tenure"})


class MemberValuePage(Schema):
    as_of = Instant()
    currency = fields.String()
    members_with_purchases = fields.Integer()
    pareto_top20_share = fields.Float(
        allow_none=True,
        metadata={"description": "share of the net contribution the top ceil(N/5) buyers bring"},
    )
    items = fields.List(fields.Nested(MemberValue))
    next = fields.String(allow_none=True, metadata={"description": "pass back as ?cursor="})


@blp.route("/members")
@allow("auditor")
@blp.arguments(MembersQuery(), location="query")
@blp.response(200, MemberValuePage)
def members(query: dict[str, Any]) -> dict[str, Any]:
    """Per member: value class, RFM scores, net contribution and stage; the Pareto share"""
    limit: int = query["limit"]
    after = _read_cursor(query.get("cursor"))
    as_of = query.get("as_of")
    if as_of is None:
        found = reads.customer_value(query.get("class_"), after, limit + 1)
    else:
        found = ledger().customer_value(
            as_of=as_of, value_class=query.get("class_"), after=after, limit=limit + 1
        )
    page = found.pop("members")
    more = len(page) > limit
    return {**found, "items": page[:limit], "next": _cursor(after + limit) if more else None}


# The effect of the follow-up plans (the follow-up process's read models).


class FollowupQuery(Schema):
    plan = fields.String(
        validate=validate.Regexp(r"^[a-z0-9][a-z0-9-]{0,31}$"),
        metadata={"description": "one plan's versions only"},
    )


class IntervalView(Schema):
    low = fields.Float()
    high = fields.Float()


class GroupView(Schema):
    members = fields.Integer()
    converted = fields.Integer(metadata={"description": "reached the plan's goal in its window"})
    conversion_rate = fields.Float(allow_none=True)
    revenue = DecimalText(metadata={"description": "purchases inside the goal window"})
    revenue_per_member = DecimalText(allow_none=True)


class UpliftView(Schema):
    conversion = fields.Float(
        allow_none=True, metadata={"description": "treated minus holdout conversion rate"}
    )
    interval = fields.Nested(
        IntervalView,
        allow_none=True,
        metadata={"description": "95%, Newcombe's hybrid score interval (Wilson per group)"},
    )
    method = fields.String()
    wald_interval = fields.Nested(IntervalView, allow_none=True)
    revenue_per_member = DecimalText(allow_none=True)


class StepView(Schema):
    n = fields.Integer()
    reached = fields.Integer(metadata={"description": "treated members the step was sent for"})
    share_reached = fields.Float(allow_none=True, metadata={"description": "of the treated"})
    withheld = fields.Integer(metadata={"description": "holdout members it fell due for"})
    outcomes = fields.Dict(keys=fields.String(), values=fields.Integer())


class PlanEffectView(Schema):
    plan = fields.String()
    version = fields.Integer()
    entered = fields.Integer()
    treated = fields.Nested(GroupView)
    holdout = fields.Nested(GroupView)
    uplift = fields.Nested(UpliftView)
    steps = fields.List(fields.Nested(StepView))


class FollowupEffectView(Schema):
    position = position_field("the log position the follow-up process has read to")
    as_of = fields.DateTime()
    plans = fields.List(fields.Nested(PlanEffectView))


@blp.route("/followups")
@allow("auditor")
@blp.arguments(FollowupQuery, location="query")
@blp.response(200, FollowupEffectView)
def followups(query: dict[str, Any]) -> dict[str, Any]:
    """The effect of each follow-up plan version: treated against holdout, with the uplift"""
    tables = backend().followups
    assert tables is not None
    return followup_effect.answer(tables, query.get("plan"), backend().clock.now())
