"""Reads served from the read models: read-your-writes with ?after=, and the ledger answering
whenever a stored row no longer holds (time moved past it, or a new program version)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from adapters.keys import KEY_ROLES
from adapters.projections import MemberStatusProjection, ProjectionThread, ProjectionWorker
from adapters.settings import Settings
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.app import create_app
from api.bootstrap import bootstrap
from api.reads import READ_FROM_HEADER
from domain.clock import FixedClock
from domain.program import ProgramRules
from tests.answers import answers
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import START, Server

WAIT_SECONDS = 0.3


@pytest.fixture
def reader(database_url: str) -> Iterator[tuple[Server, MemberStatusView]]:
    """The app reading from the views, with no worker: the tests move the views themselves."""
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    views = open_member_status_view(ledger.env)
    try:
        app = create_app(
            ledger,
            keys,
            token_secret=secret,
            clock=clock,
            views=views,
            read_wait_seconds=WAIT_SECONDS,
        )
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        yield Server(app, app.test_client(), clock, ledger, keys, secret, api_keys), views
    finally:
        views.close()
        ledger.close()
        keys.close()


def project(server: Server, views: MemberStatusView) -> int:
    return ProjectionWorker(
        server.ledger, MemberStatusProjection(views, server.ledger, representations)
    ).catch_up()


def read(server: Server, path: str) -> tuple[str, dict[str, Any]]:
    response = server.call("GET", path, "storefront")
    assert response.status_code == 200, response.json
    return response.headers[READ_FROM_HEADER], dict(response.json or {})


def test_a_write_says_where_it_was_recorded(reader: tuple[Server, MemberStatusView]) -> None:
    server, _ = reader
    server.enrol("ann")
    first = server.purchase("A-1", "ann")
    second = server.purchase("A-2", "ann")
    head = server.ledger.recorder.max_notification_id()
    assert first["position"] < second["position"] == head
    repeat = server.call(
        "POST",
        "/v1/purchases",
        "storefront",
        {"order_id": "A-1", "member_id": "ann", "amount": "120.00", "currency": "USD"},
    )
    assert repeat.status_code == 200
    assert repeat.json["position"] == head  # nothing new recorded: the head is enough


def test_status_reads_come_from_the_view_once_it_has_the_write(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("ann")
    project(server, views)
    bought = server.purchase("A-1", "ann")
    path = "/v1/members/ann"

    # Without ?after= too, the read sees the purchase: the view is behind it, so the ledger
    # answers (PROGRAM.md, Reads see every acknowledged write).
    source, seen = read(server, path)
    assert source == "ledger" and seen["points"]["pending"] == 120

    # With it, the read waits for the view; none is running, so the ledger answers in time.
    started = time.monotonic()
    source, fresh = read(server, f"{path}?after={bought['position']}")
    assert time.monotonic() - started >= WAIT_SECONDS
    assert source == "ledger" and fresh["points"]["pending"] == 120

    project(server, views)
    source, viewed = read(server, f"{path}?after={bought['position']}")
    assert source == "view"
    assert viewed == answers(server.ledger).member_status("ann") == fresh


def test_a_worker_in_the_background_serves_read_your_writes(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("bob")
    projector = ProjectionThread(server.ledger, views, representations, poll_seconds=0.01).start()
    try:
        for n in range(1, 6):
            bought = server.purchase(f"B-{n}", "bob", "10.00")
            source, status = read(server, f"/v1/members/bob?after={bought['position']}")
            assert status["points"]["pending"] == 10 * n  # always sees its own write
            assert source == "view"
    finally:
        projector.stop()


def test_a_position_not_yet_in_the_log_is_refused(reader: tuple[Server, MemberStatusView]) -> None:
    server, _ = reader
    server.enrol("ann")
    head = server.ledger.recorder.max_notification_id() or 0
    response = server.call("GET", f"/v1/members/ann?after={head + 1}", "storefront")
    assert_problem(response, 422)
    assert "after" in response.json["errors"]
    for path in (
        "/v1/members/ann?after=-1",
        "/v1/members/ann?after=abc",
        "/v1/members/ann/referrals?after=1.5",
        "/v1/purchases/A-1?after=x",
        f"/v1/purchases/A-1?after={head + 1}",
    ):
        response = server.call("GET", path, "storefront")
        assert_problem(response, 422)
        assert "after" in response.json["errors"], path


def test_the_ledger_answers_when_time_has_moved_past_the_stored_status(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("ann")
    server.purchase("A-1", "ann")
    project(server, views)
    assert read(server, "/v1/members/ann")[0] == "view"
    row = views.row("ann")
    assert row is not None and row.valid_until is not None
    # The lot becomes available at the end of the return window; nobody ran the scheduler.
    server.clock.advance(row.valid_until - server.clock.now())
    source, status = read(server, "/v1/members/ann")
    assert source == "ledger"
    assert (status["points"]["available"], status["points"]["pending"]) == (120, 0)
    assert status == answers(server.ledger).member_status("ann")


def test_the_ledger_answers_under_a_program_version_the_view_has_not_seen(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("ann")
    project(server, views)
    server.ledger.publish_program(replace(ProgramRules(), return_window_days=7), "t")
    server.clock.advance(timedelta(seconds=2))  # past the ledger's cached program
    assert read(server, "/v1/members/ann")[0] == "ledger"
    project(server, views)
    assert read(server, "/v1/members/ann")[0] == "view"


def test_purchases_and_referrals_read_from_the_views_as_from_the_ledger(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    code = server.enrol("ann")["referral_code"]
    body = {"member_id": "cat", "email": "cat@example.com", "referral_code": code}
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 201
    server.purchase("C-1", "cat", "80.00")
    refund = server.call(
        "POST", "/v1/purchases/C-1/refunds", "storefront", {"refund_id": "r-1", "amount": "30.00"}
    )
    assert refund.status_code == 201
    after = refund.json["position"]

    from_ledger = {
        path: read(server, path)
        for path in ("/v1/purchases/C-1", "/v1/members/ann/referrals?limit=5")
    }
    assert {source for source, _ in from_ledger.values()} == {"ledger"}  # nothing projected
    project(server, views)
    for path, (_, expected) in from_ledger.items():
        source, body = read(server, f"{path}{'&' if '?' in path else '?'}after={after}")
        assert (source, body) == ("view", expected), path
    assert from_ledger["/v1/purchases/C-1"][1]["refunded_amount"] == "30.00"
    assert [r["referee_id"] for r in from_ledger["/v1/members/ann/referrals?limit=5"][1]["items"]]


def busy_history(server: Server) -> None:
    """Referrals, guaranteed purchases, a claim, a refund, a redemption, 40 days on."""
    code = server.enrol("ann")["referral_code"]
    for member_id in ("bob", "cat", "dan"):
        body = {"member_id": member_id, "email": f"{member_id}@example.com"}
        if member_id != "dan":
            body["referral_code"] = code
        assert server.call("POST", "/v1/members", "storefront", body).status_code == 201
    for order_id, member_id, amount, guarantee in (
        ("G-1", "bob", "650.00", "satisfaction"),
        ("G-2", "cat", "80.00", "satisfaction"),
        ("P-1", "ann", "2500.00", None),
        ("P-2", "dan", "40.00", None),
    ):
        body = {"order_id": order_id, "member_id": member_id, "amount": amount, "currency": "USD"}
        if guarantee:
            body["guarantee"] = guarantee
        assert server.call("POST", "/v1/purchases", "storefront", body).status_code == 201
    claim = {"claim_id": "c-1"}
    response = server.call("POST", "/v1/purchases/G-2/guarantee-claims", "storefront", claim)
    assert response.status_code == 201, response.json
    refund = {"refund_id": "r-1", "amount": "50.00"}
    assert server.call("POST", "/v1/purchases/G-1/refunds", "storefront", refund).status_code == 201
    server.clock.advance(timedelta(days=40))
    server.ledger.record_due()
    redemption = {"redemption_id": "x-1", "points": 100}
    response = server.call("POST", "/v1/members/ann/redemptions", "storefront", redemption)
    assert response.status_code == 201, response.json


def test_the_analytics_summary_from_the_views_is_the_ledgers(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    busy_history(server)

    def summary() -> tuple[str, dict[str, Any]]:
        response = server.call("GET", "/v1/analytics/summary", "auditor")
        assert response.status_code == 200, response.json
        return response.headers[READ_FROM_HEADER], dict(response.json or {})

    source, before = summary()  # no view built yet: the ledger answers, not an empty view
    assert (source, before["position"], before["members"]["total"]) == ("ledger", None, 4)
    project(server, views)
    source, from_views = summary()
    expected = {
        **server.ledger.analytics_summary(),
        "position": from_views["position"],
        "refresh_pending": 0,
    }
    assert source == "view" and from_views == expected
    assert from_views["position"] == server.ledger.recorder.max_notification_id()
    assert from_views["members"]["total"] == 4
    assert from_views["members"]["by_tier"]["gold"] == 1  # ann, 2,500.00
    points = from_views["points_outstanding"]
    # 40 days: every lot matured. ann 2,500 + 500 for bob - 100 redeemed; bob 650 - 50 refunded
    # + 250; cat's claim took her 80 and voided her referral (ann's 500 and her 250); dan 40.
    assert (points["available"], points["pending"]) == (2900 + 850 + 40, 0)
    assert from_views["referrals"]["registered"] == 2
    assert from_views["guarantees"]["claims"] == 1


def test_customer_value_from_the_views_is_the_ledgers(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    busy_history(server)
    path = "/v1/analytics/members?limit=2"
    before = server.call("GET", path, "auditor")
    assert before.headers[READ_FROM_HEADER] == "ledger"  # nothing projected yet
    project(server, views)
    for query in ("", "&class=A", "&class=D", "&cursor=" + before.json["next"]):
        response = server.call("GET", path + query, "auditor")
        assert response.status_code == 200, response.json
        assert response.headers[READ_FROM_HEADER] == "view"
        server.app.extensions["daifuku"] = replace(server.app.extensions["daifuku"], views=None)
        from_ledger = server.call("GET", path + query, "auditor")
        server.app.extensions["daifuku"] = replace(server.app.extensions["daifuku"], views=views)
        assert from_ledger.headers[READ_FROM_HEADER] == "ledger"
        assert response.json == from_ledger.json, query
    everyone = server.call("GET", "/v1/analytics/members", "auditor").json
    classes = {m["member_id"]: m["value_class"] for m in everyone["items"]}
    assert classes["cat"] == "D"  # paid out more than she bought
    assert everyone["members_with_purchases"] == 4
