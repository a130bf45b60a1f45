"""Scenarios of features/followups.feature, with the steps only they use.

The follow-up process runs in the test on the scenario's store (its tables beside the ledger's,
as ``daifuku serve`` keeps them), a catch-up at a time; the app reads its effect from the same
tables. Plans are published on the ledger itself, and a member's follow-ups are read from the
member as the ledger holds it, so these scenarios need no plan endpoints. The webhook steps run
the dispatcher and deliverer as features/webhooks.feature does (tests/webhook_driver.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from pytest_bdd import given, scenarios, then, when

from adapters.followup_process import FollowupProcess, run_until_caught_up
from adapters.followup_tables import FollowupTables
from adapters.settings import Settings
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks
from api.context import EXTENSION
from domain.members.followups import Followup
from domain.plans import Plan, PlanVersion, group_of
from tests.bdd.conftest import World, instant, step
from tests.histories import lines, member, purchase
from tests.receiver import Receiver
from tests.webhook_driver import Driver, verified

scenarios("followups.feature")

NDJSON = "application/x-ndjson"
CAUSE = "bdd:plans"
TRIGGER_WORDS = {"a first purchase": "first_purchase", "going quiet": "became_dormant"}
STOP_WORDS = {"a purchase": "purchased", "nothing": None}


@pytest.fixture
def process(world: World, database_url: str) -> Iterator[FollowupProcess]:
    """The follow-up process on the scenario's store; the app's analytics read its tables."""
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    tables = FollowupTables.open(settings.database)
    app = world.client.application
    app.extensions[EXTENSION] = replace(app.extensions[EXTENSION], followups=tables)
    try:
        yield FollowupProcess(world.ledger, tables)
    finally:
        tables.close()


@dataclass
class Hooks:
    """The scenario's webhooks and its receivers by name, with the secret each was given."""

    webhooks: Webhooks
    driver: Driver
    receivers: dict[str, Receiver] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def receiver(self, name: str) -> Receiver:
        if name not in self.receivers:
            self.receivers[name] = Receiver().start()
        return self.receivers[name]


@pytest.fixture
def hooks(world: World, database_url: str) -> Iterator[Hooks]:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    outbox = Outbox.open(settings.database)
    webhooks = Webhooks(world.ledger, outbox, allow_private=True)
    app = world.client.application
    app.extensions[EXTENSION] = replace(app.extensions[EXTENSION], webhooks=webhooks)
    found = Hooks(webhooks, Driver.open(webhooks, world.clock))
    try:
        yield found
    finally:
        found.driver.close()
        for receiver in found.receivers.values():
            receiver.stop()
        outbox.close()


def plan_in_force(world: World, name: str) -> PlanVersion:
    found = world.ledger.followup_plans().current(name)
    assert found is not None, f"no plan {name!r}"
    return found


def followups_of(world: World, member_id: str, plan: str) -> list[Followup]:
    held = world.ledger.member_copy(member_id).followups.by_id.values()
    return [followup for followup in held if followup.plan == plan]


def followup_of(world: World, member_id: str, plan: str) -> Followup:
    found = followups_of(world, member_id, plan)
    assert len(found) == 1, found
    return found[0]


def steps_as_rows(datatable: list[list[str]]) -> list[tuple[int, str, str]]:
    header, *rows = datatable
    assert header == ["day", "channel", "message"], header
    return [(int(day), channel, message) for day, channel, message in rows]


# The plans.


@given(
    step(
        'the "{name:q}" plan in force is version {version:d}, for {trigger}, stopped by {stop}, '
        "holding out {percent:d}%, with these steps:"
    )
)
def plan_in_force_is(
    world: World,
    name: str,
    version: int,
    trigger: str,
    stop: str,
    percent: int,
    datatable: list[list[str]],
) -> None:
    found = plan_in_force(world, name)
    plan = found.plan
    assert found.version == version, found
    assert (plan.trigger, plan.stop, plan.holdout_percent) == (
        TRIGGER_WORDS[trigger],
        STOP_WORDS[stop],
        percent,
    ), plan
    in_force = [(s.delay_days, s.channel, s.message_key) for s in plan.steps]
    assert in_force == steps_as_rows(datatable), in_force


@given(step('the "{first:q}", "{second:q}" and "{third:q}" plans are paused'))
def plans_paused(world: World, first: str, second: str, third: str) -> None:
    for name in (first, second, third):
        paused = replace(plan_in_force(world, name).plan, active=False)
        _, published = world.ledger.publish_plan(name, paused, CAUSE)
        assert published, name


@when(step('the admin publishes a version of the "{name:q}" plan with these steps:'))
def publish_steps(world: World, name: str, datatable: list[list[str]]) -> None:
    document = plan_in_force(world, name).plan.to_dict()
    document["steps"] = [
        {"delay_days": day, "channel": channel, "message_key": message}
        for day, channel, message in steps_as_rows(datatable)
    ]
    _, published = world.ledger.publish_plan(name, Plan.from_dict(document), CAUSE)
    assert published


@then(step('the "{name:q}" plan in force is version {version:d}'))
def plan_version_in_force(world: World, name: str, version: int) -> None:
    assert plan_in_force(world, name).version == version


@given(step('"{member_id:q}" is in the "{group:q}" group of "{name:q}"'))
def in_group(world: World, member_id: str, group: str, name: str) -> None:
    """The hash of member and plan puts the member there (the scenario chose it so)."""
    assert group_of(member_id, name, plan_in_force(world, name).plan.holdout_percent) == group


# The process.


@given("the follow-up process has caught up")
@when("the follow-up process has caught up")
def process_caught_up(process: FollowupProcess) -> None:
    run_until_caught_up(process)
    assert process.catch_up() == 0, "the process did not catch up"


# A member's follow-ups.


@then(
    step(
        '"{member_id:q}" has an "{state:q}" follow-up of "{plan:q}" version {version:d}, '
        "triggered at {at:instant}"
    )
)
@then(
    step(
        '"{member_id:q}" has a "{state:q}" follow-up of "{plan:q}" version {version:d}, '
        "triggered at {at:instant}"
    )
)
def has_followup(
    world: World, member_id: str, state: str, plan: str, version: int, at: datetime
) -> None:
    found = followup_of(world, member_id, plan)
    assert (found.state, found.plan_version, found.trigger_at) == (state, version, at), found
    expected = group_of(member_id, plan, plan_in_force(world, plan).plan.holdout_percent)
    assert found.group == expected, found


@then(step('"{member_id:q}" has no follow-up of "{plan:q}"'))
def has_no_followup_of(world: World, member_id: str, plan: str) -> None:
    assert followups_of(world, member_id, plan) == []


@then(step('"{member_id:q}" has no follow-ups'))
def has_no_followups(world: World, member_id: str) -> None:
    held = world.ledger.member_copy(member_id).followups.by_id
    assert held == {}, held
    kinds = [event["type"] for event in world.events(member_id)]
    assert "FollowupStarted" not in kinds, kinds


@then(step('the steps of the "{plan:q}" follow-up of "{member_id:q}" are:'))
def steps_are(world: World, plan: str, member_id: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header == ["step", "due at", "channel", "message", "state"], header
    expected = [(int(n), instant(due), channel, key, state) for n, due, channel, key, state in rows]
    found = [
        (s.n, s.due_at, s.channel, s.message_key, s.state)
        for s in followup_of(world, member_id, plan).steps
    ]
    assert found == expected, found


@then(step('the steps of the "{plan:q}" follow-up of "{member_id:q}" are "{states:q}"'))
def step_states(world: World, plan: str, member_id: str, states: str) -> None:
    followup = followup_of(world, member_id, plan)
    found = [s.state for s in followup.steps]
    assert found == [state.strip() for state in states.split(",")], found
    for s in followup.steps:
        # A step is recorded at its own time, however late the scheduler ran.
        assert s.recorded_at == (None if s.state == "waiting" else s.due_at), s


@then(
    step('the "{plan:q}" follow-up of "{member_id:q}" stopped at {at:instant} because "{reason:q}"')
)
def stopped_because(world: World, plan: str, member_id: str, at: datetime, reason: str) -> None:
    found = followup_of(world, member_id, plan)
    assert (found.state, found.ended_at, found.reason) == ("stopped", at, reason), found


# Webhooks.


@given(step('the admin subscribed "{name:q}" to "{types:q}"'))
def admin_subscribed(world: World, hooks: Hooks, name: str, types: str) -> None:
    body = {
        "url": f"{hooks.receiver(name).url}/{name}",
        "types": [t.strip() for t in types.split(",")],
    }
    response = world.call("POST", "/v1/webhooks", "admin", body)
    assert response.status_code == 201, response.json
    hooks.secrets[name] = world.body()["secret"]


@when("the dispatcher delivers")
def dispatcher_delivers(hooks: Hooks) -> None:
    hooks.driver.run()


@then(step('"{name:q}" received these messages, in this order, each signed with its secret:'))
def received_messages(hooks: Hooks, name: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header[0] == "type", header
    messages = [verified(hooks.secrets[name], r) for r in hooks.receiver(name).received]
    found = [[m["type"]] + [str(m["data"].get(column)) for column in header[1:]] for m in messages]
    if "due_at" in header:
        at = header.index("due_at")
        rows = [row[:at] + [instant(row[at]).isoformat()] + row[at + 1 :] for row in rows]
        found = [row[:at] + [instant(row[at]).isoformat()] + row[at + 1 :] for row in found]
    assert found == rows, found


# Imports.

RECORDS = {
    "member": lambda row: member(row["id"], row["at"]),
    "purchase": lambda row: purchase(row["id"], row["of"], row["amount"], row["at"]),
}


@when("the storefront imports these records:")
def storefront_imports(world: World, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    records = [
        RECORDS[row["kind"]](row) for row in (dict(zip(header, r, strict=True)) for r in rows)
    ]
    response = world.client.post(
        "/v1/imports?name=shop",
        data="\n".join(lines(records)) + "\n",
        headers={**world.credentials("storefront"), "Content-Type": NDJSON},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    results = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [r["status"] for r in results] == ["applied"] * len(records), results


# The effect.


@when(step('the auditor reads the effect of the "{plan:q}" plan'))
def auditor_reads_effect(world: World, process: FollowupProcess, plan: str) -> None:
    response = world.call("GET", f"/v1/analytics/followups?plan={plan}", "auditor")
    assert response.status_code == 200, response.json
    assert world.body()["position"] == process.position, world.body()


def effect_of(world: World, plan: str, version: int) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        p for p in world.body()["plans"] if (p["plan"], p["version"]) == (plan, version)
    ]
    assert len(found) == 1, world.body()
    return found[0]


@then(step('the effect of "{plan:q}" version {version:d} is, for {entered:d} members entered:'))
def effect_is(
    world: World, plan: str, version: int, entered: int, datatable: list[list[str]]
) -> None:
    header, *rows = datatable
    assert header == [
        "group", "members", "converted", "conversion rate", "revenue", "revenue per member",
    ], header  # fmt: skip
    effect = effect_of(world, plan, version)
    assert effect["entered"] == entered, effect
    for group, members, converted, rate, revenue, per_member in rows:
        shown = effect[group]
        assert (shown["members"], shown["converted"]) == (int(members), int(converted)), shown
        assert shown["conversion_rate"] == pytest.approx(float(rate)), shown
        assert Decimal(shown["revenue"]) == Decimal(revenue), shown
        assert Decimal(shown["revenue_per_member"]) == Decimal(per_member), shown
    treated, holdout = effect["treated"], effect["holdout"]
    uplift = treated["conversion_rate"] - holdout["conversion_rate"]
    assert effect["uplift"]["conversion"] == pytest.approx(uplift), effect


@then(step('the steps of "{plan:q}" version {version:d} reached:'))
def steps_reached(world: World, plan: str, version: int, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    assert header == ["step", "reached", "share reached", "withheld"], header
    expected = [(int(n), int(r), float(s), int(w)) for n, r, s, w in rows]
    found = [
        (s["n"], s["reached"], s["share_reached"], s["withheld"])
        for s in effect_of(world, plan, version)["steps"]
    ]
    assert found == expected, found
