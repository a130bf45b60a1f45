"""Follow-up plans (read by everyone but members, published by admins), a member's follow-ups,
and the outcomes the shop reports for the steps it was told of."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api import representations
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import answer, cause, ledger
from api.schemas import Count, Instant, StrictBody, position_field
from domain.members.followups import ACTIVE, COMPLETED, DUE, OUTCOMES, STOPPED, WAITING, WITHHELD
from domain.plans import (
    CHANNELS,
    GOAL_EVENTS,
    GROUPS,
    MESSAGE_KEY,
    MOST_DELAY_DAYS,
    MOST_DESCRIPTION,
    MOST_GOAL_DAYS,
    MOST_HOLDOUT_PERCENT,
    MOST_STEPS,
    STAGES,
    STOPS,
    TRIGGERS,
    VALUE_CLASSES,
    Plan,
    check_name,
)

MOST_DETAIL = 500

plans_blp = ApiBlueprint(
    "followup-plans",
    __name__,
    url_prefix="/v1/followup-plans",
    description="For a rank of customers, when to contact them, by which channel, with which "
    "message. Every publication is a new version; a follow-up keeps the version it started under.",
)
blp = ApiBlueprint(
    "followups",
    __name__,
    url_prefix="/v1",
    description="A member's follow-ups, their group (treated or holdout) and steps, and what the "
    "shop reports it did with a step it was told of (followup.step_due).",
)


# The plan document. Its fields and validators describe it in the OpenAPI document; the ledger
# checks it (Plan.from_dict: every problem at once, by field path, and the audience's tiers
# against the program's), so loading hands the body on as it was sent.


class PlanStepDocument(StrictBody):
    delay_days = Count(
        required=True,
        validate=validate.Range(min=0, max=MOST_DELAY_DAYS),
        metadata={"description": "days after the trigger; not fewer than the step before's"},
    )
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    message_key = fields.String(
        required=True,
        validate=validate.Regexp(MESSAGE_KEY),
        metadata={"description": "what the shop's own systems render"},
    )


def _names(allowed: tuple[str, ...] | None, description: str) -> fields.List[Any]:
    item = fields.String(validate=None if allowed is None else validate.OneOf(allowed))
    return fields.List(item, allow_none=True, metadata={"description": description})


class AudienceDocument(StrictBody):
    """Who the plan is for: every condition given must hold; an empty list is anyone."""

    value_class = _names(VALUE_CLASSES, "value classes (A: the best customers)")
    stage = _names(STAGES, "lifecycle stages")
    tier = _names(None, "names of the program's tiers")
    referred = fields.Boolean(
        allow_none=True,
        metadata={"description": "true: referred members only, false: the others; null: anyone"},
    )


class GoalDocument(StrictBody):
    event = fields.String(validate=validate.OneOf(GOAL_EVENTS), load_default="purchase")
    within_days = Count(validate=validate.Range(min=1, max=MOST_GOAL_DAYS), load_default=30)


class PlanDocument(StrictBody):
    description = fields.String(validate=validate.Length(max=MOST_DESCRIPTION), load_default="")
    active = fields.Boolean(
        load_default=True, metadata={"description": "false: the plan starts no follow-up"}
    )
    audience = fields.Nested(AudienceDocument, allow_none=True)
    trigger = fields.String(required=True, validate=validate.OneOf(TRIGGERS))
    steps = fields.List(
        fields.Nested(PlanStepDocument),
        required=True,
        validate=validate.Length(min=1, max=MOST_STEPS),
    )
    stop = fields.String(
        allow_none=True,
        validate=validate.OneOf(STOPS),
        load_default="purchased",
        metadata={"description": "purchased: a purchase since the trigger ends it; null: never"},
    )
    goal = fields.Nested(
        GoalDocument,
        allow_none=True,
        metadata={"description": "what counts as converted, for the effect"},
    )
    holdout_percent = Count(
        validate=validate.Range(min=0, max=MOST_HOLDOUT_PERCENT),
        load_default=10,
        metadata={"description": "the share of the audience that deliberately gets no steps"},
    )

    def load(self, data: Any, **kwargs: Any) -> Any:
        """The body as sent: Plan.from_dict checks it."""
        return data


class PlanVersionView(Schema):
    version = fields.Integer()
    published_at = Instant()
    plan = fields.Nested(PlanDocument)


class PlanView(Schema):
    name = fields.String()
    version = fields.Integer(metadata={"description": "the version in force"})
    published_at = Instant()
    plan = fields.Nested(PlanDocument)
    versions = fields.List(fields.Nested(PlanVersionView), metadata={"description": "oldest first"})


class PlanList(Schema):
    plans = fields.List(fields.Nested(PlanView), metadata={"description": "by name"})


class OutcomeRequest(StrictBody):
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    detail = fields.String(allow_none=True, validate=validate.Length(max=MOST_DETAIL))


class FollowupStepView(Schema):
    n = fields.Integer()
    due_at = Instant()
    channel = fields.String()
    message_key = fields.String()
    state = fields.String(
        metadata={
            "enum": [WAITING, DUE, WITHHELD],
            "description": "due: the shop was told; withheld: the holdout's, nothing was sent",
        }
    )
    recorded_at = Instant(allow_none=True)
    outcome = fields.String(allow_none=True, metadata={"enum": [*OUTCOMES, None]})
    detail = fields.String(allow_none=True)
    reported_at = Instant(allow_none=True)


class GoalView(Schema):
    event = fields.String()
    within_days = fields.Integer()
    until = Instant()


class FollowupView(Schema):
    id = fields.String()
    plan = fields.String()
    plan_version = fields.Integer()
    group = fields.String(metadata={"enum": list(GROUPS)})
    trigger = fields.String()
    trigger_at = Instant()
    started_at = Instant()
    state = fields.String(metadata={"enum": [ACTIVE, COMPLETED, STOPPED]})
    ended_at = Instant(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it stopped"})
    goal = fields.Nested(GoalView)
    steps = fields.List(fields.Nested(FollowupStepView))


class FollowupRecorded(FollowupView):
    position = position_field()


class MemberFollowups(Schema):
    member_id = fields.String()
    followups = fields.List(fields.Nested(FollowupView), metadata={"description": "newest first"})


@plans_blp.route("")
@allow("storefront", "auditor")
@plans_blp.response(200, PlanList)
def list_plans() -> dict[str, Any]:
    """Every plan with its version in force and all its versions"""
    plans = ledger().followup_plans()
    return {"plans": [representations.plan(name, plans.history(name)) for name in plans.names()]}


@plans_blp.route("/<plan_name:name>")
@allow("storefront", "auditor")
@plans_blp.response(200, PlanView)
@plans_blp.doc(responses={"404": "NOT_FOUND"})
def read_plan(name: str) -> dict[str, Any]:
    """A plan with its version in force and all its versions"""
    return representations.plan(name, ledger().followup_plan(name))


@plans_blp.route("/<plan_name:name>", methods=["PUT"])
@allow()
@plans_blp.arguments(PlanDocument(), description="The whole plan, as GET answers its `plan`")
@plans_blp.response(201, PlanView, description="Published as a new version (a new plan's 1)")
@plans_blp.alt_response(
    200, schema=PlanView, description="The same as the version in force: nothing published"
)
def publish(body: dict[str, Any], name: str) -> tuple[dict[str, Any], int]:
    """Publish a version of a plan (the document replaces the one in force whole); follow-ups
    already started keep the version they started under"""
    check_name(name)
    found = ledger()
    plan = Plan.from_dict(body, tuple(tier.name for tier in found.terms().rules.tiers))
    published, new = found.publish_plan(name, plan, cause=cause())
    # Up to the version published: another admin's later one is not this answer's.
    history = found.followup_plan(name)[: published.version]
    return representations.plan(name, history), 201 if new else 200


@blp.route("/members/<id:member_id>/followups")
@allow("storefront", "auditor", member="member_id")
@blp.response(200, MemberFollowups)
@blp.doc(responses={"404": "NOT_FOUND"})
def member_followups(member_id: str) -> dict[str, Any]:
    """The member's follow-ups, newest first, with their group and steps"""
    found = ledger().member_followups(member_id)
    return {"member_id": member_id, "followups": [representations.followup(f) for f in found]}


# A step number no plan could have matches no route (404), like one that is not a number.
@blp.route(
    f"/followups/<followup_id:followup_id>/steps/<int(min=1, max={MOST_STEPS}):n>/outcome",
    methods=["POST"],
)
@allow("storefront")
@blp.arguments(OutcomeRequest())
@blp.response(201, FollowupRecorded, description="Recorded; the follow-up after it")
@blp.alt_response(
    200, schema=FollowupRecorded, description="The same report again: nothing recorded"
)
@blp.doc(responses={"404": "NOT_FOUND", "409": "CONFLICT"})
def report_outcome(body: dict[str, Any], followup_id: str, n: int) -> tuple[dict[str, Any], int]:
    """Report what the shop did with a step it was told of: sent or failed (once; the same
    report again changes nothing, a different one is a conflict)"""
    written = ledger().report_followup_outcome(
        followup_id, n, body["outcome"], body.get("detail"), cause=cause()
    )
    return answer(written, representations.followup)
