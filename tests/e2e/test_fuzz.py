"""Schemathesis against the app's own OpenAPI document, in process, with an admin key, on SQLite.

Every answer must be no 5xx, and inside the document: a documented status, content type,
headers and a body matching that status's schema. Two runs:

- ``test_every_operation``: each operation on its own, from the document's boundaries
  (schemathesis' coverage phase: minimum, maximum, one past them, missing and wrong types) and
  then Hypothesis-generated requests, valid and invalid;
- ``test_workflows``: sequences following the links schemathesis infers (enrol, then read the
  member, purchase, redeem, cancel...), each scenario on a fresh store.

Every store is seeded (two members, three orders, a redemption, a follow-up), and hooks make
half the generated path ids name those and half the generated purchases, programs and plans
acceptable (the program's currency, rules that fit together), so that requests get past 404 and
422 to the writes and reads behind them.

Deterministic: Hypothesis runs derandomized (the same requests every run) without an example
database (its source-constants cache still goes to the gitignored ./.hypothesis, as for every
Hypothesis test of the suite); the stores are SQLite files in tmp_path. A failure prints the
request as a curl command (the key filtered out: any admin key reproduces it) and Hypothesis'
falsifying example. Bounded by example counts: ~30 s.

Not checked, on purpose: schemathesis' ``negative_data_rejection``. It counts an unknown query
parameter as invalid where the API ignores one; it cannot see that the admin key we add stands
in for the ``Authorization`` it left out; and the hooks below, which swap in seeded ids and an
acceptable purchase, turn some of its invalid requests into valid ones it still expects refused.
tests/e2e/test_bounds.py and test_problems.py pin the 422s for invalid input instead.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.keys import KeyStore
from adapters.settings import Settings
from api.app import create_app
from api.bootstrap import bootstrap
from api.context import EXTENSION
from domain.actors import Cause
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members.followups import FollowupStart, followup_id
from domain.plans import DEFAULT_PLANS
from domain.program import ProgramRules
from tests.e2e.conftest import START

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def build(url: str) -> tuple[Any, KeyStore, Ledger]:
    clock = FixedClock(START)
    ledger, keys, secret = bootstrap(
        Settings.from_environ({"DAIFUKU_DATABASE_URL": url}), clock=clock
    )
    app = create_app(ledger, keys, token_secret=secret, clock=clock)
    app.config["FUZZ_CLOCK"] = clock
    return app, keys, ledger


def served_document() -> dict[str, Any]:
    """/openapi.json as the app serves it, read once at collection from a throwaway store."""
    with tempfile.TemporaryDirectory() as where:
        app, keys, ledger = build(f"sqlite:///{Path(where) / 'document.db'}")
        try:
            document: dict[str, Any] = app.test_client().get("/openapi.json").json
        finally:
            ledger.close()
            keys.close()
    return document


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx: Any, value: Any) -> bytes:
    """An import batch: the generated text as it is, anything else as one JSON line."""
    return (value if isinstance(value, str) else json.dumps(value)).encode()


@schemathesis.deserializer("application/x-ndjson")
def ndjson_text(ctx: Any, response: Any) -> str:
    """An import's results (or the export): the text, which the document says is a string."""
    return str(response.content.decode("utf-8"))


schema = schemathesis.openapi.from_dict(served_document())
DEFAULT_RULES = ProgramRules().to_dict()
# What every store is seeded with (seed()), so that generated ids sometimes name something.
SEEDED = {
    "member_id": ["ann", "bob"],
    "order_id": ["A-1", "A-2", "A-3"],
    "redemption_id": ["R-1"],
    "followup_id": [followup_id("thank-you", 1, "ann")],
    "name": ["thank-you", "win-back"],
}
THANK_YOU = DEFAULT_PLANS["thank-you"].to_dict()


# A batch that imports: a new member, a purchase of it and of a seeded member, a refund.
IMPORT_BATCH = "".join(
    json.dumps(record) + "\n"
    for record in (
        {"kind": "member", "member_id": "imp", "email": "imp@example.org",
         "enrolled_at": "2023-01-01T00:00:00+00:00"},
        {"kind": "purchase", "order_id": "I-1", "member_id": "imp", "amount": "30.00",
         "currency": "USD", "occurred_at": "2023-02-01T00:00:00+00:00"},
        {"kind": "purchase", "order_id": "I-2", "member_id": "ann", "amount": "12.00",
         "currency": "USD", "occurred_at": "2023-02-01T00:00:00+00:00"},
        {"kind": "refund", "order_id": "I-1", "refund_id": "IR-1",
         "occurred_at": "2023-02-03T00:00:00+00:00"},
    )
)  # fmt: skip


def seed(app: Any, admin: dict[str, str]) -> None:
    client = app.test_client()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.json
        return dict(response.json)

    code = post("/v1/members", {"member_id": "ann", "email": "ann@example.com"})["referral_code"]
    post("/v1/members", {"member_id": "bob", "email": "bob@example.net", "referral_code": code})
    order = {"amount": "120.00", "currency": "USD", "guarantee": "satisfaction"}
    post("/v1/purchases", {"order_id": "A-1", "member_id": "ann", **order})
    post("/v1/purchases", {"order_id": "A-2", "member_id": "bob", **order, "guarantee": "double"})
    app.config["FUZZ_CLOCK"].advance(timedelta(days=31))  # A-1's and A-2's points are available
    post("/v1/members/ann/redemptions", {"redemption_id": "R-1", "points": 10})
    post("/v1/purchases", {"order_id": "A-3", "member_id": "ann", **order})
    # A follow-up of ann's (as the follow-up process would start it): step 1 due, step 2 not.
    start = FollowupStart(
        followup=SEEDED["followup_id"][0],
        plan="thank-you",
        plan_version=1,
        group="treated",
        trigger="first_purchase",
        trigger_at=app.config["FUZZ_CLOCK"].now(),
        steps=((0, "email", "thank-you/thanks"), (3, "email", "thank-you/useful-information")),
        stop=None,
        goal_event="purchase",
        goal_days=30,
        purchases_at_trigger=3,
    )
    app.extensions[EXTENSION].ledger.start_followup("ann", start, Cause.of("fuzz seed"))


@schema.hook("flatmap_path_parameters")
def sometimes_seeded(context: Any, parameters: Any) -> st.SearchStrategy[Any]:
    """Half the generated path ids name a seeded member or order."""
    if not isinstance(parameters, dict) or not set(parameters) & set(SEEDED):
        return st.just(parameters)
    seeded = st.fixed_dictionaries(
        {
            name: st.sampled_from(SEEDED[name]) if name in SEEDED else st.just(value)
            for name, value in parameters.items()
        }
    )
    return st.one_of(st.just(parameters), seeded)


@schema.hook("flatmap_body")
def sometimes_acceptable(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Half the generated purchases and programs made acceptable beyond what the document says
    (the program's currency, rules that fit together), so fuzzing reaches the writes behind."""
    operation = context.operation
    if operation is not None and (operation.method.upper(), operation.path) == (
        "POST",
        "/v1/imports",
    ):
        return st.sampled_from([body, IMPORT_BATCH])
    if not isinstance(body, dict) or operation is None:
        return st.just(body)
    if (operation.method.upper(), operation.path) == ("POST", "/v1/purchases"):
        acceptable = st.fixed_dictionaries(
            {
                "member_id": st.sampled_from(SEEDED["member_id"]),
                "currency": st.just("USD"),
                "amount": st.sampled_from(["0.01", "5.50", "120.00", "999999.99"]),
                "occurred_at": st.none(),
                "items": st.none(),
                "guarantee": st.sampled_from([None, "satisfaction", "double"]),
            }
        )
        return st.one_of(st.just(body), acceptable.map(lambda fix: {**body, **fix}))
    if (operation.method.upper(), operation.path) == ("PUT", "/v1/program"):
        rules = copy.deepcopy(DEFAULT_RULES)
        for section in ("earning", "lifecycle", "referrals"):
            given = body.get(section)
            if isinstance(given, dict):
                rules[section].update(
                    {k: v for k, v in given.items() if isinstance(v, int) and k in rules[section]}
                )
        if isinstance(body.get("tier_period_days"), int):
            rules["tier_period_days"] = body["tier_period_days"]
        return st.sampled_from([body, rules])
    if (operation.method.upper(), operation.path) == ("PUT", "/v1/followup-plans/{name}"):
        # A generated plan may name tiers the program lacks or steps out of order: half publish.
        return st.sampled_from([body, {**THANK_YOU, "holdout_percent": 20}])
    return st.just(body)


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on a SQLite file in tmp_path, seeded, and an admin key's headers."""
    app, keys, ledger = build(f"sqlite:///{(tmp_path / 'fuzz.db').resolve()}")
    try:
        admin = {"Authorization": f"Bearer {keys.create('admin', 'fuzz admin')}"}
        seed(app, admin)
        yield app, admin
    finally:
        ledger.close()
        keys.close()


def test_the_document_is_the_one_served(fuzzed: tuple[Any, dict[str, str]]) -> None:
    app, _ = fuzzed
    assert app.test_client().get("/openapi.json").json == schema.raw_schema
    assert len(list(schema.get_all_operations())) >= 20


@schema.parametrize()
@settings(BOUNDED, max_examples=100)
def test_every_operation(case: Any, fuzzed: tuple[Any, dict[str, str]]) -> None:
    app, admin = fuzzed
    response = case.call(app=app, headers=admin)
    case.validate_response(response, checks=CHECKS, headers=admin)


def test_workflows(tmp_path: Path) -> None:
    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        """Each scenario on a store of its own: a replayed scenario must meet the same state."""

        scenarios = 0

        def setup(self) -> None:
            Workflow.scenarios += 1
            where = tmp_path / f"scenario-{Workflow.scenarios}.db"
            self.app, self.keys, self.ledger = build(f"sqlite:///{where}")
            self.admin = {"Authorization": f"Bearer {self.keys.create('admin', 'fuzz admin')}"}
            seed(self.app, self.admin)

        def teardown(self) -> None:
            self.ledger.close()
            self.keys.close()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"app": self.app, "headers": self.admin}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=self.admin)

    Workflow.run(settings=settings(BOUNDED, max_examples=60, stateful_step_count=8))
