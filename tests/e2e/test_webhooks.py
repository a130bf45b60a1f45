"""Webhooks end to end, on both stores: subscriptions over HTTP, the dispatcher following the
log, and a real receiver on loopback verifying every signature with standardwebhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.settings import Settings
from adapters.webhook_dispatch import prune
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks, key_name
from api.app import create_app
from api.bootstrap import bootstrap
from domain.clock import FixedClock
from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import KEY_ROLES, START, Server
from tests.receiver import Receiver, Reply
from tests.scrapes import value
from tests.webhook_driver import Driver, verified


@dataclass
class Hooks:
    server: Server
    webhooks: Webhooks
    driver: Driver

    def subscribe(self, url: str, types: list[str], **extra: Any) -> dict[str, Any]:
        body = {"url": url, "types": types, **extra}
        response = self.server.call("POST", "/v1/webhooks", "admin", body)
        assert response.status_code == 201, response.json
        return dict(response.json or {})

    def run(self, receiver: Receiver | None = None, expect: int | None = None) -> None:
        self.driver.run(receiver, expect)

    def later(self, seconds: float) -> None:
        """Move the ledger's clock on, and the deliverer's with it (to reach a retry)."""
        self.server.clock.advance(timedelta(seconds=seconds))


@pytest.fixture
def hooks(database_url: str) -> Iterator[Hooks]:
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    outbox = Outbox.open(settings.database)
    webhooks = Webhooks(ledger, outbox, allow_private=True)
    try:
        app = create_app(ledger, keys, token_secret=secret, clock=clock, webhooks=webhooks)
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        server = Server(app, app.test_client(), clock, ledger, keys, secret, api_keys)
        driver = Driver.open(webhooks, clock)
        yield Hooks(server, webhooks, driver)
        driver.close()
    finally:
        outbox.close()
        ledger.close()
        keys.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


def test_a_purchase_that_upgrades_delivers_both_in_order(hooks: Hooks, receiver: Receiver) -> None:
    made = hooks.subscribe(receiver.url, ["purchase.recorded", "tier.upgraded"])
    hooks.server.enrol("m-1")
    hooks.server.purchase("o-1", "m-1", "600.00")
    hooks.run(receiver, expect=2)
    received = receiver.received
    assert [verified(made["secret"], r)["type"] for r in received] == [
        "purchase.recorded",
        "tier.upgraded",
    ]
    purchase = json.loads(received[0].body)
    assert purchase["data"]["order_id"] == "o-1"
    assert purchase["data"]["amount"] == "600.00"
    assert purchase["data"]["member_id"] == "m-1"
    assert purchase["data"]["actor"]["kind"] == "key"
    ids = [r.headers["webhook-id"] for r in received]
    assert len(set(ids)) == 2


def test_retries_keep_the_same_id_until_a_2xx(hooks: Hooks, receiver: Receiver) -> None:
    hooks.subscribe(receiver.url, ["member.enrolled"])
    receiver.respond(500, 500)
    hooks.server.enrol("m-1")
    hooks.run(receiver, expect=1)
    assert len(receiver.received) == 1
    hooks.later(6)  # the first retry is due 5 s (+-10%) later
    hooks.run(receiver, expect=2)
    hooks.later(330)  # the second, 5 minutes later
    hooks.run(receiver, expect=3)
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    listed = hooks.server.call("GET", f"/v1/webhooks/{_only(hooks)}/deliveries", "auditor")
    assert listed.status_code == 200, listed.json
    (delivery,) = listed.json["items"]
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [500, 500, 200]


def test_410_disables_the_endpoint(hooks: Hooks, receiver: Receiver) -> None:
    made = hooks.subscribe(receiver.url, ["*"])
    receiver.always(Reply(410))
    hooks.server.enrol("m-1")
    hooks.run(receiver, expect=1)
    found = hooks.server.call("GET", f"/v1/webhooks/{made['id']}").json
    assert found["enabled"] is False
    assert "410" in found["disabled_reason"]


def _only(hooks: Hooks) -> str:
    listed = hooks.server.call("GET", "/v1/webhooks").json
    (item,) = listed["items"]
    return str(item["id"])


def test_metrics_show_the_dispatchers_lag_and_what_waits(hooks: Hooks, receiver: Receiver) -> None:
    hooks.subscribe(receiver.url, ["member.enrolled"])
    receiver.always(Reply(503, headers={"Retry-After": "60"}))

    def scrape(name: str) -> float | None:
        return value(hooks.server.client.get("/metrics").get_data(as_text=True), name)

    hooks.run()
    assert scrape("daifuku_webhook_dispatcher_lag_events") == 0
    head = hooks.webhooks.head()
    hooks.server.enrol("m-1")
    hooks.server.enrol("m-2")
    assert scrape("daifuku_webhook_dispatcher_lag_events") == hooks.webhooks.head() - head >= 2
    hooks.run(receiver, expect=2)
    assert scrape("daifuku_webhook_dispatcher_lag_events") == 0
    assert scrape("daifuku_webhook_deliveries_waiting") == 2
    assert scrape("daifuku_webhook_retries_pending") == 2
    listed = hooks.server.call("GET", f"/v1/webhooks/{_only(hooks)}/deliveries", "auditor").json
    waits = [
        datetime.fromisoformat(d["next_attempt_at"]).timestamp() - hooks.driver.clock()
        for d in listed["items"]
    ]
    assert all(55 < wait <= 60 for wait in waits), waits  # Retry-After beats the 5 s retry
    receiver.always(Reply(200))
    hooks.later(61)
    hooks.run(receiver, expect=4)
    assert scrape("daifuku_webhook_deliveries_waiting") == 0
    assert scrape("daifuku_webhook_retries_pending") == 0


def test_a_removed_subscription_sends_nothing_and_its_secret_is_gone(
    hooks: Hooks, receiver: Receiver
) -> None:
    made = hooks.subscribe(receiver.url, ["*"])
    hooks.server.enrol("m-1")
    removed = hooks.server.call("DELETE", f"/v1/webhooks/{made['id']}")
    assert removed.status_code == 200, removed.json
    hooks.run()
    assert receiver.received == []
    assert hooks.server.call("GET", f"/v1/webhooks/{made['id']}").status_code == 404
    assert not hooks.server.ledger.sealer.held(key_name(made["id"]))  # type: ignore[attr-defined]
    exported = hooks.server.call("GET", "/v1/audit/export", "auditor").get_data(as_text=True)
    assert made["secret"] not in exported and made["secret"].removeprefix("whsec_") not in exported


def test_one_dispatcher_holds_the_lease_at_a_time(hooks: Hooks) -> None:
    outbox = hooks.webhooks.outbox
    assert outbox.take_lease("first", 5.0, 1000.0)
    assert not outbox.take_lease("second", 5.0, 1001.0)  # the first one's lease runs
    assert outbox.take_lease("first", 5.0, 1004.0)  # renewed to 1009
    assert not outbox.take_lease("second", 5.0, 1008.0)
    assert outbox.take_lease("second", 5.0, 1010.0)  # the first stopped renewing: taken over
    outbox.release_lease("first")  # not its lease any more: nothing happens
    assert not outbox.take_lease("first", 5.0, 1011.0)
    outbox.release_lease("second")
    assert outbox.take_lease("first", 5.0, 1012.0)  # released: at once


def test_an_endpoint_failing_every_delivery_for_5_days_is_disabled(
    hooks: Hooks, receiver: Receiver
) -> None:
    made = hooks.subscribe(receiver.url, ["member.enrolled"])
    receiver.always(Reply(500))
    hooks.server.enrol("m-1")
    hooks.run(receiver, expect=1)
    for wait in (6, 330, 1_980, 7_920, 19_800, 39_600, 55_440, 79_200, 95_040):
        hooks.later(wait)  # each retry of the schedule, and a tenth more (the jitter)
        hooks.run(receiver, expect=len(receiver.received) + 1)
    assert len(receiver.received) == 10  # the first attempt and nine retries, then no more
    listed = hooks.server.call("GET", f"/v1/webhooks/{made['id']}/deliveries", "auditor").json
    assert [d["state"] for d in listed["items"]] == ["failed"]
    assert hooks.server.call("GET", f"/v1/webhooks/{made['id']}").json["enabled"] is True
    hooks.later(5 * 86_400 - sum((6, 330, 1_980, 7_920, 19_800, 39_600, 55_440, 79_200, 95_040)))
    hooks.server.enrol("m-2")  # fails too, five days after the first failure
    hooks.run(receiver, expect=11)
    found = hooks.server.call("GET", f"/v1/webhooks/{made['id']}").json
    assert found["enabled"] is False
    assert "every delivery failed since" in found["disabled_reason"]


def test_finished_deliveries_are_forgotten_after_the_retention(
    hooks: Hooks, receiver: Receiver
) -> None:
    made = hooks.subscribe(receiver.url, ["member.enrolled"])
    hooks.server.enrol("m-1")
    hooks.run(receiver, expect=1)
    receiver.always(Reply(500))
    hooks.server.enrol("m-2")  # fails: still waiting for a retry when the retention passes
    hooks.run(receiver, expect=2)
    path = f"/v1/webhooks/{made['id']}/deliveries"
    assert len(hooks.server.call("GET", path, "auditor").json["items"]) == 2
    hooks.later(29 * 86_400)
    assert prune(hooks.webhooks, 30, hooks.server.clock.now()) == 0  # not yet
    hooks.later(2 * 86_400)
    assert prune(hooks.webhooks, 30, hooks.server.clock.now()) == 1
    (kept,) = hooks.server.call("GET", path, "auditor").json["items"]
    assert kept["member_id"] == "m-2" and kept["state"] == "pending"
    receiver.always(Reply(200))
    replayed = hooks.server.call(
        "POST", f"/v1/webhooks/{made['id']}/replays", "admin", {"after": 0}
    )
    assert replayed.status_code == 202, replayed.json
    hooks.run(receiver, expect=4)  # m-1 again (queued anew), m-2 at its retry
    found = hooks.server.call("GET", path, "auditor").json["items"]
    assert sorted(d["member_id"] for d in found) == ["m-1", "m-2"]


UNKNOWN = "0b7c9d3e-5f1a-4c2b-9e8d-7a6b5c4d3e2f"


@pytest.mark.parametrize(
    ("method", "path", "body", "as_"),
    [
        ("GET", f"/v1/webhooks/{UNKNOWN}", None, "admin"),
        ("PATCH", f"/v1/webhooks/{UNKNOWN}", {"enabled": False}, "admin"),
        ("DELETE", f"/v1/webhooks/{UNKNOWN}", None, "admin"),
        ("GET", f"/v1/webhooks/{UNKNOWN}/deliveries", None, "auditor"),
        ("POST", f"/v1/webhooks/{UNKNOWN}/replays", {"after": 0}, "admin"),
        ("GET", "/v1/webhooks/not-a-uuid", None, "admin"),
    ],
)
def test_an_unknown_subscription_is_a_404_everywhere(
    hooks: Hooks, method: str, path: str, body: Any, as_: str
) -> None:
    found = assert_problem(hooks.server.call(method, path, as_, body), 404)
    assert found["type"].endswith("/unknown-webhook")


@pytest.mark.parametrize(
    ("method", "suffix", "body", "field"),
    [
        ("PATCH", "", {"url": "ftp://shop.example.com/hooks"}, "url"),
        ("PATCH", "", {"types": []}, "types"),
        ("PATCH", "", {"secret": "mine"}, "secret"),
        ("POST", "/replays", {}, "after"),
        ("POST", "/replays", {"after": 0, "since": "2026-11-23T10:00:00+00:00"}, "after"),
        ("POST", "/replays", {"since": "2026-11-23T10:00:00"}, "since"),
        ("POST", "/replays", {"after": -1}, "after"),
        ("GET", "/deliveries?state=lost", None, "state"),
        ("GET", "/deliveries?cursor=abc", None, "cursor"),
        ("GET", "/deliveries?limit=0", None, "limit"),
    ],
)
def test_bad_changes_replays_and_queries_are_refused_and_change_nothing(
    hooks: Hooks, receiver: Receiver, method: str, suffix: str, body: Any, field: str
) -> None:
    made = hooks.subscribe(receiver.url, ["member.enrolled"])
    head = hooks.webhooks.head()
    as_ = "auditor" if method == "GET" else "admin"
    response = hooks.server.call(method, f"/v1/webhooks/{made['id']}{suffix}", as_, body)
    assert field in assert_invalid(response, field)
    assert hooks.webhooks.head() == head  # nothing recorded
    found = hooks.server.call("GET", f"/v1/webhooks/{made['id']}").json
    assert {k: found[k] for k in ("url", "types", "enabled")} == {
        "url": receiver.url,
        "types": ["member.enrolled"],
        "enabled": True,
    }


def test_the_list_pages_with_a_cursor_and_refuses_one_it_did_not_give(
    hooks: Hooks, receiver: Receiver
) -> None:
    made = []
    for i in range(3):
        made.append(hooks.subscribe(receiver.url, ["*"], description=f"n{i}")["id"])
        hooks.later(1)  # oldest first
    first = hooks.server.call("GET", "/v1/webhooks?limit=2").json
    second = hooks.server.call("GET", f"/v1/webhooks?limit=2&cursor={first['next']}").json
    assert [w["id"] for w in first["items"] + second["items"]] == made
    assert second["next"] is None
    assert_invalid(hooks.server.call("GET", "/v1/webhooks?cursor=bm90LW91cnM"), "cursor")
