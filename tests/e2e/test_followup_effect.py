"""Follow-ups end to end, on both stores: the process following the log beside the API, a due
step delivered as a signed ``followup.step_due`` webhook, the effect read over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from adapters.followup_process import FollowupProcess, run_until_caught_up
from adapters.followup_tables import FollowupTables
from adapters.settings import Settings
from adapters.sidetables import connect
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks
from api.app import create_app
from api.bootstrap import bootstrap
from domain.clock import FixedClock
from domain.plans import group_of
from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import KEY_ROLES, START, Server
from tests.receiver import Receiver
from tests.scrapes import value
from tests.webhook_driver import Driver, verified


@dataclass
class Rig:
    server: Server
    process: FollowupProcess
    driver: Driver

    def catch_up(self) -> None:
        run_until_caught_up(self.process)

    def later(self, days: float) -> None:
        self.server.clock.advance(timedelta(days=days))


@pytest.fixture
def rig(database_url: str) -> Iterator[Rig]:
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    outbox = Outbox.open(settings.database)
    webhooks = Webhooks(ledger, outbox, allow_private=True)
    tables = FollowupTables(connect(settings.database))
    try:
        app = create_app(
            ledger, keys, token_secret=secret, clock=clock, webhooks=webhooks, followups=tables
        )
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        server = Server(app, app.test_client(), clock, ledger, keys, secret, api_keys)
        driver = Driver.open(webhooks, clock)
        yield Rig(server, FollowupProcess(ledger, tables), driver)
        driver.close()
    finally:
        tables.close()
        outbox.close()
        ledger.close()
        keys.close()


def treated(plan: str, n: int = 0) -> str:
    found = [f"c-{k}" for k in range(100) if group_of(f"c-{k}", plan, 10) == "treated"]
    return found[n]


def held_out(plan: str) -> str:
    return next(f"c-{k}" for k in range(1000) if group_of(f"c-{k}", plan, 10) == "holdout")


def test_a_due_step_is_delivered_signed_and_a_withheld_one_is_not(
    rig: Rig, receiver_: Receiver
) -> None:
    made = rig.server.call(
        "POST", "/v1/webhooks", "admin", {"url": receiver_.url, "types": ["followup.step_due"]}
    ).json
    assert made is not None
    sent_to, kept_from = treated("thank-you"), held_out("thank-you")
    for n, member_id in enumerate((sent_to, kept_from)):
        rig.server.enrol(member_id)
        rig.later(0.001)
        rig.server.purchase(f"o-{n}", member_id, "30.00")
    rig.catch_up()
    rig.driver.run(receiver_)
    thanks = [
        m["data"]
        for m in (verified(made["secret"], r) for r in receiver_.received)
        if m["data"]["plan"] == "thank-you"
    ]
    assert [(m["member_id"], m["step"], m["channel"], m["message_key"]) for m in thanks] == [
        (sent_to, 1, "email", "thank-you/thanks")
    ]
    assert thanks[0]["followup"] == f"thank-you~2~{sent_to}"
    assert thanks[0]["plan_version"] == 1
    rig.later(3)
    rig.server.ledger.record_due()
    rig.driver.run(receiver_)
    steps = [
        (m["data"]["member_id"], m["data"]["step"])
        for m in (verified(made["secret"], r) for r in receiver_.received)
        if m["data"]["plan"] == "thank-you"
    ]
    assert steps == [(sent_to, 1), (sent_to, 2)], "the holdout member is sent nothing"


def test_the_effect_is_read_over_http_by_auditors_and_admins(rig: Rig) -> None:
    member_id = treated("prospect")
    rig.server.enrol(member_id)
    rig.catch_up()
    rig.later(1)
    rig.server.purchase("o-1", member_id, "40.00")
    rig.catch_up()
    for role in ("auditor", "admin"):
        response = rig.server.call("GET", "/v1/analytics/followups?plan=prospect", role)
        assert response.status_code == 200, response.json
        body = response.json
        assert body is not None
        assert body["position"] == rig.server.ledger.recorder.max_notification_id()
        (prospect,) = body["plans"]
        assert (prospect["plan"], prospect["version"], prospect["entered"]) == ("prospect", 1, 1)
        assert prospect["treated"] == {
            "members": 1,
            "converted": 1,
            "conversion_rate": 1.0,
            "revenue": "40.00",
            "revenue_per_member": "40.00",
        }
        assert prospect["uplift"]["interval"] is None, "no holdout member: no interval"
    assert_problem(rig.server.call("GET", "/v1/analytics/followups", "storefront"), 403)
    assert_invalid(
        rig.server.call("GET", "/v1/analytics/followups?plan=Not_A_Plan", "auditor"), "plan"
    )
    everything = rig.server.call("GET", "/v1/analytics/followups", "auditor").json
    assert everything is not None
    assert {p["plan"] for p in everything["plans"]} >= {"prospect", "thank-you"}


def test_metrics_show_how_far_the_process_is_behind(rig: Rig) -> None:
    def lag() -> float | None:
        scraped = rig.server.client.get("/metrics").get_data(as_text=True)
        return value(scraped, "daifuku_followup_process_lag_events")

    rig.catch_up()
    assert lag() == 0
    head = rig.server.ledger.recorder.max_notification_id() or 0
    rig.server.enrol("m-1")  # the member and its referral code's ownership
    assert lag() == (rig.server.ledger.recorder.max_notification_id() or 0) - head == 2
    rig.catch_up()
    assert lag() == 0


@pytest.fixture
def receiver_() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found
