"""Scenarios of features/webhooks.feature, with the steps only they use.

The scenario's app gets a ``Webhooks`` on the scenario's store (the default app keeps its
outbox in memory), and the dispatcher and deliverer run in the test, a step at a time
(tests/webhook_driver.py), posting to receivers on loopback (tests/receiver.py). "N seconds
pass" moves the deliverer's clock with the ledger's, so a retry falls due.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
from pytest_bdd import given, scenarios, then, when
from standardwebhooks import WebhookVerificationError

from adapters.settings import Settings
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks
from api.context import EXTENSION
from api.problems import PROBLEM_TYPES
from tests.bdd.conftest import World, step
from tests.histories import lines, member, purchase
from tests.receiver import Received, Receiver, Reply
from tests.webhook_driver import Driver, verified

scenarios("webhooks.feature")

NDJSON = "application/x-ndjson"
NO_SUCH_WEBHOOK = "0b7c9d3e-5f1a-4c2b-9e8d-7a6b5c4d3e2f"


@dataclass
class Hooks:
    """The scenario's webhooks, its receivers by name, and what each subscription was given."""

    webhooks: Webhooks
    driver: Driver
    receivers: dict[str, Receiver] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    old_secrets: dict[str, str] = field(default_factory=dict)

    def receiver(self, name: str) -> Receiver:
        if name not in self.receivers:
            self.receivers[name] = Receiver().start()
        return self.receivers[name]

    def url(self, name: str) -> str:
        return f"{self.receiver(name).url}/{name}"

    def received(self, name: str) -> list[Received]:
        return self.receiver(name).received


@pytest.fixture
def hooks(world: World, database_url: str) -> Iterator[Hooks]:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    outbox = Outbox.open(settings.database)
    webhooks = Webhooks(world.ledger, outbox, allow_private=True)
    app = world.client.application
    app.extensions[EXTENSION] = replace(app.extensions[EXTENSION], webhooks=webhooks)
    driver = Driver.open(webhooks, world.clock)
    found = Hooks(webhooks, driver)
    try:
        yield found
    finally:
        driver.close()
        for receiver in found.receivers.values():
            receiver.stop()
        outbox.close()


def types_of(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def body_of(received: Received) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(received.body)
    return found


def whole_log(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while page := world.ledger.event_log(after=found[-1]["position"] if found else 0, limit=1000):
        found.extend(page)
    return found


def position_of(world: World, kind: str, member_id: str) -> int:
    (position,) = [
        e["position"] for e in whole_log(world) if (e["type"], e["member_id"]) == (kind, member_id)
    ]
    return int(position)


def subscription(world: World, hooks: Hooks, name: str) -> dict[str, Any]:
    response = world.call("GET", f"/v1/webhooks/{hooks.ids[name]}", "admin")
    assert response.status_code == 200, response.json
    return world.body()


def deliveries(world: World, hooks: Hooks, name: str) -> list[dict[str, Any]]:
    response = world.call("GET", f"/v1/webhooks/{hooks.ids[name]}/deliveries", "auditor")
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = world.body()["items"]
    return items


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split()


# The server and the subscriptions.


@given("the server allows endpoints on loopback")
def allows_loopback(hooks: Hooks) -> None:
    hooks.webhooks.allow_private = True


@given("the server allows only public https endpoints")
def allows_public_only(hooks: Hooks) -> None:
    hooks.webhooks.allow_private = False


def subscribe(world: World, hooks: Hooks, name: str, types: str, include_imports: bool) -> None:
    body = {"url": hooks.url(name), "types": types_of(types), "include_imports": include_imports}
    response = world.call("POST", "/v1/webhooks", "admin", body)
    assert response.status_code == 201, response.json
    assert response.json["secret"].startswith("whsec_"), response.json
    assert response.json["include_imports"] is include_imports
    hooks.ids[name] = response.json["id"]
    hooks.secrets[name] = response.json["secret"]


@given(step('the admin subscribed "{name:q}" to "{types:q}"'))
def admin_subscribed(world: World, hooks: Hooks, name: str, types: str) -> None:
    subscribe(world, hooks, name, types, include_imports=False)


@given(step('the admin subscribed "{name:q}" to "{types:q}" with imports included'))
def admin_subscribed_with_imports(world: World, hooks: Hooks, name: str, types: str) -> None:
    subscribe(world, hooks, name, types, include_imports=True)


@when(step('the admin subscribes "{name:q}" to "{types:q}"'))
def admin_subscribes(world: World, hooks: Hooks, name: str, types: str) -> None:
    world.call("POST", "/v1/webhooks", "admin", {"url": hooks.url(name), "types": types_of(types)})


@when(step('the admin subscribes the url "{url:q}" to "{types:q}"'))
def admin_subscribes_url(world: World, url: str, types: str) -> None:
    world.call("POST", "/v1/webhooks", "admin", {"url": url, "types": types_of(types)})


@then("there are no subscriptions")
def no_subscriptions(world: World) -> None:
    response = world.call("GET", "/v1/webhooks", "admin")
    assert response.status_code == 200, response.json
    assert world.body()["items"] == []


@when(step('the admin enables the subscription of "{name:q}" again'))
def admin_enables(world: World, hooks: Hooks, name: str) -> None:
    response = world.call("PATCH", f"/v1/webhooks/{hooks.ids[name]}", "admin", {"enabled": True})
    assert response.status_code == 200, response.json
    assert response.json["enabled"] is True


@when(step('the admin changes the types of "{name:q}" to "{types:q}"'))
def admin_changes_types(world: World, hooks: Hooks, name: str, types: str) -> None:
    body = {"types": types_of(types)}
    world.call("PATCH", f"/v1/webhooks/{hooks.ids[name]}", "admin", body)


@when(step('the admin reads the subscription "{webhook_id:q}"'))
def admin_reads(world: World, webhook_id: str) -> None:
    world.call("GET", f"/v1/webhooks/{webhook_id}", "admin")


@when(step('the admin rotates the secret of the subscription "{webhook_id:q}"'))
def admin_rotates_unknown(world: World, webhook_id: str) -> None:
    world.call("POST", f"/v1/webhooks/{webhook_id}/secret", "admin")


@when(step('the admin rotates the secret of "{name:q}"'))
def admin_rotates(world: World, hooks: Hooks, name: str) -> None:
    response = world.call("POST", f"/v1/webhooks/{hooks.ids[name]}/secret", "admin")
    assert response.status_code == 200, response.json
    assert response.json["secret"] != hooks.secrets[name]
    hooks.old_secrets[name] = hooks.secrets[name]
    hooks.secrets[name] = response.json["secret"]


@then(step('the old secret of "{name:q}" signs until {moment:instant}'))
def old_secret_until(world: World, hooks: Hooks, name: str, moment: datetime) -> None:
    assert datetime.fromisoformat(world.body()["previous_secret_valid_until"]) == moment
    shown = subscription(world, hooks, name)["previous_secret_valid_until"]
    assert datetime.fromisoformat(shown) == moment


@then(step('the subscription of "{name:q}" is disabled because "{reason:q}"'))
def subscription_disabled(world: World, hooks: Hooks, name: str, reason: str) -> None:
    found = subscription(world, hooks, name)
    assert (found["enabled"], found["disabled_reason"]) == (False, reason), found


@then(step('the subscription of "{name:q}" is enabled'))
def subscription_enabled(world: World, hooks: Hooks, name: str) -> None:
    found = subscription(world, hooks, name)
    assert (found["enabled"], found["disabled_reason"]) == (True, None), found


# Replays.


def ask_replay(world: World, hooks: Hooks, name: str, body: dict[str, Any]) -> None:
    world.call("POST", f"/v1/webhooks/{hooks.ids[name]}/replays", "admin", body)


@when(
    step(
        'the admin asks for a replay of "{name:q}" after the position of the enrolment of '
        '"{member_id:q}"'
    )
)
def replay_after_enrolment(world: World, hooks: Hooks, name: str, member_id: str) -> None:
    ask_replay(world, hooks, name, {"after": position_of(world, "Enrolled", member_id)})


@when(step('the admin asks for a replay of "{name:q}" since {moment:instant}'))
def replay_since(world: World, hooks: Hooks, name: str, moment: datetime) -> None:
    ask_replay(world, hooks, name, {"since": moment.isoformat()})


@when(step('the admin asks for a replay of "{name:q}" after a position beyond the last in the log'))
def replay_beyond(world: World, hooks: Hooks, name: str) -> None:
    ask_replay(world, hooks, name, {"after": hooks.webhooks.head() + 1})


# The receivers.


@given(step('"{name:q}" answers {replies}'))
def answers(hooks: Hooks, name: str, replies: str) -> None:
    """ "500, 500, then 200": the next requests get these statuses, later ones 200."""
    hooks.receiver(name).respond(*(int(status) for status in re.findall(r"\d{3}", replies)))


@given(step('"{name:q}" takes {seconds:d} seconds over each answer'))
def slow_answers(hooks: Hooks, name: str, seconds: int) -> None:
    hooks.receiver(name).always(Reply(200, delay=float(seconds)))


@when("the dispatcher delivers")
def dispatcher_delivers(hooks: Hooks) -> None:
    hooks.driver.run()


@when(step("the dispatcher delivers for {seconds:d} second"))
def dispatcher_delivers_for(hooks: Hooks, seconds: int) -> None:
    deadline = time.monotonic() + seconds
    hooks.driver.dispatch()
    hooks.driver.deliver_until(lambda: time.monotonic() >= deadline)


@given(step('the dispatcher delivered {count:d} message to "{name:q}"'))
@given(step('the dispatcher delivered {count:d} messages to "{name:q}"'))
def dispatcher_delivered(hooks: Hooks, count: int, name: str) -> None:
    hooks.driver.run(hooks.receiver(name), expect=count)
    assert len(hooks.received(name)) == count


@then(step('"{name:q}" received {count:d} message'))
@then(step('"{name:q}" received {count:d} messages'))
def received_count(hooks: Hooks, name: str, count: int) -> None:
    assert len(hooks.received(name)) == count, [body_of(r) for r in hooks.received(name)]


def messages_as_rows(hooks: Hooks, name: str, header: list[str]) -> list[list[str]]:
    """What ``name`` received, verified with its secret, as rows of ``header``'s columns (the
    type, then fields of the data; an empty cell where the data has none)."""
    assert header[0] == "type", header
    messages = [verified(hooks.secrets[name], r) for r in hooks.received(name)]
    return [
        [m["type"]] + [str(m["data"].get(column) or "") for column in header[1:]] for m in messages
    ]


@then(step('"{name:q}" received these messages, in this order, each signed with its secret:'))
def received_messages(hooks: Hooks, name: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    found = messages_as_rows(hooks, name, header)
    assert found == rows, found


@then(
    step(
        '"{name:q}" received these messages, each member\'s in this order, each signed with its '
        "secret:"
    )
)
def received_messages_per_member(hooks: Hooks, name: str, datatable: list[list[str]]) -> None:
    """Different members' messages travel side by side: only each member's order is kept."""
    header, *rows = datatable
    found = messages_as_rows(hooks, name, header)
    member = header.index("member_id")

    def by_member(table: list[list[str]]) -> dict[str, list[list[str]]]:
        grouped: dict[str, list[list[str]]] = {}
        for row in table:
            grouped.setdefault(row[member], []).append(row)
        return grouped

    assert by_member(found) == by_member(rows), found


@then(
    step(
        'each message to "{name:q}" names the position of its event in the log, and its actor '
        "the storefront's key"
    )
)
def messages_name_position_and_actor(world: World, hooks: Hooks, name: str) -> None:
    log = {e["position"]: e for e in whole_log(world)}
    storefront = world.call("GET", "/v1/keys", "admin")
    assert storefront.status_code == 200, storefront.json
    (key,) = [k for k in world.body()["items"] if k["role"] == "storefront"]
    for received in hooks.received(name):
        data = body_of(received)["data"]
        logged = log[data["position"]]
        assert (logged["member_id"], logged["recorded_at"]) == (
            data["member_id"],
            datetime.fromisoformat(data["recorded_at"]),
        ), (logged, data)
        assert data["actor"] == logged["actor"], (logged, data)
        assert (data["actor"]["kind"], data["actor"]["id"]) == ("key", key["key_id"]), data


@then(step('each message to "{name:q}" has a webhook-id of its own'))
def webhook_ids_differ(hooks: Hooks, name: str) -> None:
    ids = [r.headers["webhook-id"] for r in hooks.received(name)]
    assert len(set(ids)) == len(ids), ids


@then(step('"{name:q}" received the same message {count:d} times, each signed with its secret'))
def same_message(hooks: Hooks, name: str, count: int) -> None:
    received = hooks.received(name)
    assert len(received) == count
    for r in received:
        verified(hooks.secrets[name], r)
    assert len({r.headers["webhook-id"] for r in received}) == 1, received
    assert len({r.body for r in received}) == 1, received


@then(step('every message to "{name:q}" about the same member carries the same webhook-id'))
def same_member_same_id(hooks: Hooks, name: str) -> None:
    ids: dict[str, set[str]] = {}
    for r in hooks.received(name):
        ids.setdefault(body_of(r)["data"]["member_id"], set()).add(r.headers["webhook-id"])
    assert all(len(found) == 1 for found in ids.values()), ids
    assert len({next(iter(found)) for found in ids.values()}) == len(ids), ids


@then(step('the last message to "{name:q}" is about "{member_id:q}"'))
def last_message_about(hooks: Hooks, name: str, member_id: str) -> None:
    assert body_of(hooks.received(name)[-1])["data"]["member_id"] == member_id


@then(
    step(
        'the last message to "{name:q}" is signed twice, and verifies with the old secret and '
        "with the new one"
    )
)
def signed_by_both(hooks: Hooks, name: str) -> None:
    last = hooks.received(name)[-1]
    assert len(signatures(last)) == 2, last.headers
    verified(hooks.old_secrets[name], last)
    verified(hooks.secrets[name], last)


@then(step('the last message to "{name:q}" verifies with the new secret only'))
def signed_by_new(hooks: Hooks, name: str) -> None:
    last = hooks.received(name)[-1]
    assert len(signatures(last)) == 1, last.headers
    verified(hooks.secrets[name], last)
    with pytest.raises(WebhookVerificationError):
        verified(hooks.old_secrets[name], last)


# Deliveries as the auditor lists them.


@then(
    step(
        'the auditor finds {count:d} delivery to "{name:q}", "{state:q}", its attempts answered '
        "{statuses}"
    )
)
def delivery_attempts(
    world: World, hooks: Hooks, count: int, name: str, state: str, statuses: str
) -> None:
    items = deliveries(world, hooks, name)
    assert len(items) == count, items
    expected = [int(status) for status in re.findall(r"\d{3}", statuses)]
    for item in items:
        assert item["state"] == state, item
        assert [a["status"] for a in item["attempts"]] == expected, item
        assert item["webhook_id"] == hooks.received(name)[0].headers["webhook-id"], item


@then(step('the auditor finds {count:d} deliveries to "{name:q}", "{state:q}"'))
def deliveries_in_state(world: World, hooks: Hooks, count: int, name: str, state: str) -> None:
    items = deliveries(world, hooks, name)
    assert [item["state"] for item in items] == [state] * count, items


@then(step('no delivery to "{name:q}" has been answered yet'))
def none_answered(world: World, hooks: Hooks, name: str) -> None:
    items = deliveries(world, hooks, name)
    assert items, "nothing was queued"
    assert all(item["attempts"] == [] and item["state"] == "pending" for item in items), items


# Problems and the log.


@then(step('the response status is {status:d} and the problem is "{kind:q}"'))
def response_problem_type(world: World, status: int, kind: str) -> None:
    assert world.response is not None
    assert world.response.status_code == status, world.body()
    assert world.body()["type"] == PROBLEM_TYPES + kind, world.body()


@then(step('nothing was recorded after the enrolment of "{member_id:q}"'))
def nothing_recorded_after(world: World, member_id: str) -> None:
    enrolled = position_of(world, "Enrolled", member_id)
    later = [e for e in whole_log(world) if e["position"] > enrolled]
    assert all(e["member_id"] == member_id for e in later), later


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
