"""Follow-up plans and a member's follow-ups over HTTP, on both stores.

Follow-ups are started by calling the ledger, as the follow-up process would: these tests are
about what the API answers and records, not about who enters a plan.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from domain.actors import Cause
from domain.members.followups import FollowupStart, followup_id
from domain.plans import CHANNELS, DEFAULT_PLANS, TRIGGERS
from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import Server

PLANS = "/v1/followup-plans"
PROBLEMS = "https://daifuku.dev/problems/"
THANK_YOU = DEFAULT_PLANS["thank-you"].to_dict()


def _changed(**fields: Any) -> dict[str, Any]:
    return {**copy.deepcopy(THANK_YOU), **fields}


def _head(server: Server) -> int:
    return server.ledger.recorder.max_notification_id() or 0


def _start(
    server: Server, member_id: str, plan: str, group: str, steps: tuple[tuple[int, str, str], ...]
) -> str:
    """Start a follow-up of ``member_id`` as the follow-up process would; its id."""
    fid = followup_id(plan, 1, member_id)
    start = FollowupStart(
        followup=fid,
        plan=plan,
        plan_version=1,
        group=group,
        trigger="first_purchase",
        trigger_at=server.clock.now(),
        steps=steps,
        stop="purchased",
        goal_event="purchase",
        goal_days=30,
        purchases_at_trigger=0,
    )
    assert server.ledger.start_followup(member_id, start, Cause.of("test")).created
    return fid


def _outcome(server: Server, fid: str, n: int, body: dict[str, Any]) -> Any:
    return server.call("POST", f"/v1/followups/{fid}/steps/{n}/outcome", "storefront", body)


# Plans.


def test_a_new_store_lists_the_five_default_plans_by_name(server: Server) -> None:
    response = server.call("GET", PLANS, "storefront")
    assert response.status_code == 200, response.json
    plans = response.json["plans"]
    assert [p["name"] for p in plans] == sorted(DEFAULT_PLANS)
    for item in plans:
        expected = DEFAULT_PLANS[item["name"]].to_dict()
        assert (item["version"], item["plan"]) == (1, expected)
        assert item["versions"] == [
            {"version": 1, "published_at": item["published_at"], "plan": expected}
        ]


def test_publishing_a_plan_makes_version_2_and_keeps_version_1(server: Server) -> None:
    first = server.call("GET", f"{PLANS}/thank-you", "auditor").json
    server.clock.advance(timedelta(hours=1))
    document = _changed(holdout_percent=20, audience={"tier": ["silver", "gold"]})
    response = server.call("PUT", f"{PLANS}/thank-you", "admin", document)
    assert response.status_code == 201, response.json
    published = response.json
    assert (published["name"], published["version"]) == ("thank-you", 2)
    assert published["published_at"] == server.clock.now().isoformat()
    assert published["plan"]["holdout_percent"] == 20
    assert published["plan"]["audience"]["tier"] == ["silver", "gold"]
    assert [v["version"] for v in published["versions"]] == [1, 2]
    assert published["versions"][0] == {
        "version": 1,
        "published_at": first["published_at"],
        "plan": THANK_YOU,
    }
    assert server.call("GET", f"{PLANS}/thank-you", "storefront").json == published
    listed = server.call("GET", PLANS, "auditor").json["plans"]
    assert [p for p in listed if p["name"] == "thank-you"] == [published]


def test_the_same_document_again_publishes_nothing(server: Server) -> None:
    before = _head(server)
    response = server.call("PUT", f"{PLANS}/thank-you", "admin", THANK_YOU)
    assert response.status_code == 200, response.json
    assert response.json["version"] == 1
    assert [v["version"] for v in response.json["versions"]] == [1]
    # The defaults a document leaves out are the plan's own: the same plan, said shorter.
    short = {"trigger": THANK_YOU["trigger"], "steps": THANK_YOU["steps"]}
    short["description"] = THANK_YOU["description"]
    assert server.call("PUT", f"{PLANS}/thank-you", "admin", short).status_code == 200
    assert _head(server) == before


def test_a_new_plan_is_published_as_its_version_1(server: Server) -> None:
    document = {
        "trigger": "tier_upgraded",
        "steps": [{"delay_days": 1, "channel": "letter", "message_key": "upgrade/welcome"}],
    }
    response = server.call("PUT", f"{PLANS}/upgraded", "admin", document)
    assert response.status_code == 201, response.json
    assert response.json["version"] == 1
    assert response.json["plan"]["holdout_percent"] == 10  # the default share
    names = [p["name"] for p in server.call("GET", PLANS, "auditor").json["plans"]]
    assert names == sorted([*DEFAULT_PLANS, "upgraded"])


def _without_channel() -> dict[str, Any]:
    document = _changed()
    del document["steps"][1]["channel"]
    return document


def _with_step_field() -> dict[str, Any]:
    document = _changed()
    document["steps"][0]["colour"] = "red"
    return document


BAD_PLANS = [
    pytest.param(_changed(trigger="birthday"), "trigger", id="unknown-trigger"),
    pytest.param(_without_channel(), "steps.1.channel", id="step-without-channel"),
    pytest.param(
        _changed(steps=[{"delay_days": -1, "channel": "email", "message_key": "k"}]),
        "steps.0.delay_days",
        id="negative-delay",
    ),
    pytest.param(_changed(holdout_percent=51), "holdout_percent", id="holdout-over-50"),
    pytest.param(_changed(holdout_percent=-1), "holdout_percent", id="holdout-negative"),
    pytest.param(
        _changed(goal={"event": "purchase", "within_days": 366}),
        "goal.within_days",
        id="goal-over-365-days",
    ),
    pytest.param(_changed(colour="red"), "colour", id="unknown-field"),
    pytest.param(_with_step_field(), "steps.0.colour", id="unknown-step-field"),
    pytest.param(_changed(audience={"tier": ["diamond"]}), "audience.tier", id="not-a-tier"),
]


@pytest.mark.parametrize(("document", "path"), BAD_PLANS)
def test_a_bad_plan_is_refused_by_field_and_changes_nothing(
    server: Server, document: dict[str, Any], path: str
) -> None:
    before, head = server.call("GET", f"{PLANS}/thank-you", "auditor").json, _head(server)
    response = server.call("PUT", f"{PLANS}/thank-you", "admin", document)
    errors = assert_invalid(response, path)
    assert response.json["type"] == PROBLEMS + "invalid-input"
    assert list(errors) == [path]
    assert server.call("GET", f"{PLANS}/thank-you", "auditor").json == before
    assert _head(server) == head


def test_a_bad_plan_name_is_refused(server: Server) -> None:
    head = _head(server)
    response = server.call("PUT", f"{PLANS}/Thank_You", "admin", THANK_YOU)
    assert_invalid(response, "name")
    assert _head(server) == head
    assert_problem(server.call("GET", f"{PLANS}/Thank_You", "auditor"), 404)


def test_an_unknown_plan_is_a_404(server: Server) -> None:
    body = assert_problem(server.call("GET", f"{PLANS}/birthday", "storefront"), 404)
    assert body["type"] == PROBLEMS + "unknown-followup-plan"


def test_plans_are_not_for_members_and_published_by_admins_only(server: Server) -> None:
    server.enrol("ann")
    token = server.member_token("ann")
    assert_problem(server.call("GET", PLANS, token), 403)
    assert_problem(server.call("GET", f"{PLANS}/thank-you", token), 403)
    for role in ("storefront", "auditor", token):
        assert_problem(server.call("PUT", f"{PLANS}/thank-you", role, _changed(active=False)), 403)
    assert server.call("GET", f"{PLANS}/thank-you", "auditor").json["version"] == 1


def test_the_openapi_document_describes_the_plan_document(server: Server) -> None:
    spec = server.client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]

    def named(ref: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = schemas[ref["$ref"].rsplit("/", 1)[1]]
        return found

    put = spec["paths"]["/v1/followup-plans/{name}"]["put"]
    document = named(put["requestBody"]["content"]["application/json"]["schema"])
    assert document["additionalProperties"] is False
    assert set(document["required"]) == {"trigger", "steps"}
    assert document["properties"]["trigger"]["enum"] == list(TRIGGERS)
    holdout = document["properties"]["holdout_percent"]
    assert (holdout["minimum"], holdout["maximum"], holdout["default"]) == (0, 50, 10)
    step = named(document["properties"]["steps"]["items"])
    assert step["properties"]["channel"]["enum"] == list(CHANNELS)
    assert step["properties"]["delay_days"]["minimum"] == 0
    assert {"200", "201", "422"} <= set(put["responses"])
    assert put["x-roles"] == ["admin"]
    listed = spec["paths"]["/v1/followup-plans"]["get"]
    assert "member" not in " ".join(listed["x-roles"])
    outcome = spec["paths"]["/v1/followups/{followup_id}/steps/{n}/outcome"]["post"]
    assert {"200", "201", "404", "409"} <= set(outcome["responses"])


# A member's follow-ups and the outcomes of their steps.

TWO_STEPS = ((0, "email", "thank-you/thanks"), (3, "email", "thank-you/useful-information"))


def test_a_members_follow_ups_show_their_group_goal_and_steps(server: Server) -> None:
    server.enrol("ann")
    started_at = server.clock.now()
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    server.clock.advance(timedelta(hours=1))
    held = _start(server, "ann", "a-class", "holdout", ((0, "call", "a-class/thank-you-call"),))
    response = server.call("GET", "/v1/members/ann/followups", "storefront")
    assert response.status_code == 200, response.json
    assert response.json["member_id"] == "ann"
    newest, oldest = response.json["followups"]
    assert (newest["id"], newest["group"], newest["state"]) == (held, "holdout", "completed")
    assert newest["steps"][0]["state"] == "withheld"
    assert oldest == {
        "id": fid,
        "plan": "thank-you",
        "plan_version": 1,
        "group": "treated",
        "trigger": "first_purchase",
        "trigger_at": started_at.isoformat(),
        "started_at": started_at.isoformat(),
        "state": "active",
        "ended_at": None,
        "reason": None,
        "goal": {
            "event": "purchase",
            "within_days": 30,
            "until": (started_at + timedelta(days=30)).isoformat(),
        },
        "steps": [
            {
                "n": 1,
                "due_at": started_at.isoformat(),
                "channel": "email",
                "message_key": "thank-you/thanks",
                "state": "due",
                "recorded_at": started_at.isoformat(),
                "outcome": None,
                "detail": None,
                "reported_at": None,
            },
            {
                "n": 2,
                "due_at": (started_at + timedelta(days=3)).isoformat(),
                "channel": "email",
                "message_key": "thank-you/useful-information",
                "state": "waiting",
                "recorded_at": None,
                "outcome": None,
                "detail": None,
                "reported_at": None,
            },
        ],
    }


def test_a_step_due_by_now_reads_as_due_before_the_scheduler_runs(server: Server) -> None:
    server.enrol("ann")
    _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    server.clock.advance(timedelta(days=3))
    (found,) = server.call("GET", "/v1/members/ann/followups", "auditor").json["followups"]
    assert [s["state"] for s in found["steps"]] == ["due", "due"]
    assert found["state"] == "completed"


def test_who_reads_a_members_follow_ups(server: Server) -> None:
    server.enrol("ann")
    server.enrol("bob")
    assert server.call("GET", "/v1/members/ann/followups", "auditor").json["followups"] == []
    token = server.member_token("ann")
    assert server.call("GET", "/v1/members/ann/followups", token).status_code == 200
    assert_problem(server.call("GET", "/v1/members/bob/followups", token), 403)
    body = assert_problem(server.call("GET", "/v1/members/nobody/followups", "storefront"), 404)
    assert body["type"] == PROBLEMS + "unknown-member"


def test_an_outcome_is_recorded_once(server: Server) -> None:
    server.enrol("ann")
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    response = _outcome(server, fid, 1, {"outcome": "sent", "detail": "mailed by the shop"})
    assert response.status_code == 201, response.json
    assert response.json["id"] == fid
    assert isinstance(response.json["position"], int)
    step = response.json["steps"][0]
    assert (step["outcome"], step["detail"]) == ("sent", "mailed by the shop")
    assert step["reported_at"] == server.clock.now().isoformat()
    (read,) = server.call("GET", "/v1/members/ann/followups", "storefront").json["followups"]
    assert read["steps"][0] == step
    head = _head(server)
    again = _outcome(server, fid, 1, {"outcome": "sent", "detail": "mailed by the shop"})
    assert again.status_code == 200, again.json
    assert again.json["steps"] == response.json["steps"]
    assert _head(server) == head
    other = assert_problem(_outcome(server, fid, 1, {"outcome": "failed"}), 409)
    assert other["type"] == PROBLEMS + "conflict"
    assert _head(server) == head


def test_an_outcome_for_a_step_not_told_of_is_refused(server: Server) -> None:
    server.enrol("ann")
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    waiting = assert_problem(_outcome(server, fid, 2, {"outcome": "sent"}), 422)
    assert waiting["type"] == PROBLEMS + "step-not-due"
    held = _start(server, "ann", "a-class", "holdout", ((0, "call", "a-class/thank-you-call"),))
    withheld = assert_problem(_outcome(server, held, 1, {"outcome": "sent"}), 422)
    assert withheld["type"] == PROBLEMS + "step-not-due"
    server.clock.advance(timedelta(days=3))  # step 2 falls due: now it can be reported
    assert _outcome(server, fid, 2, {"outcome": "failed"}).status_code == 201


@pytest.mark.parametrize(
    ("fid", "n", "slug"),
    [
        ("thank-you~1~ann", 9, "unknown-followup-step"),
        ("win-back~1~ann", 1, "unknown-followup"),
        ("thank-you~1~nobody", 1, "unknown-followup"),
        ("not-a-follow-up", 1, "unknown-followup"),
    ],
)
def test_an_outcome_for_nothing_known_is_a_404(server: Server, fid: str, n: int, slug: str) -> None:
    server.enrol("ann")
    _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    head = _head(server)
    body = assert_problem(_outcome(server, fid, n, {"outcome": "sent"}), 404)
    assert body["type"] == PROBLEMS + slug
    assert _head(server) == head


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"outcome": "opened"}, "outcome"),
        ({}, "outcome"),
        ({"outcome": "sent", "detail": "x" * 501}, "detail"),
        ({"outcome": "sent", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_outcome_is_refused(server: Server, body: dict[str, Any], path: str) -> None:
    server.enrol("ann")
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    assert_invalid(_outcome(server, fid, 1, body), path)


@pytest.mark.parametrize("n", ["0", "21", "-1", "one"])
def test_a_step_number_no_plan_could_have_is_a_404(server: Server, n: str) -> None:
    server.enrol("ann")
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    path = f"/v1/followups/{fid}/steps/{n}/outcome"
    assert_problem(server.call("POST", path, "storefront", {"outcome": "sent"}), 404)


def test_a_follow_up_id_that_no_id_could_be_is_refused(server: Server) -> None:
    response = _outcome(server, "a%20b", 1, {"outcome": "sent"})
    assert_invalid(response, "followup_id")


def test_only_a_storefront_reports_outcomes(server: Server) -> None:
    server.enrol("ann")
    fid = _start(server, "ann", "thank-you", "treated", TWO_STEPS)
    path = f"/v1/followups/{fid}/steps/1/outcome"
    for role in ("auditor", server.member_token("ann")):
        assert_problem(server.call("POST", path, role, {"outcome": "sent"}), 403)
    assert server.call("POST", path, "admin", {"outcome": "sent"}).status_code == 201
