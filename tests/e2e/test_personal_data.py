"""Personal data over HTTP: access, erasure, who may do either, and the actor of every change."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from adapters.settings import ConfigurationError, Settings
from adapters.vault import new_master_key
from api.bootstrap import bootstrap

from .assertions import assert_problem
from .conftest import Server


def test_a_member_reads_everything_held_about_it(server: Server) -> None:
    body = {"member_id": "ann", "email": "ann@example.com", "name": "Ann"}
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 201
    server.purchase("A-1", "ann")
    token = server.member_token("ann")
    response = server.call("GET", "/v1/members/ann/personal-data", token)
    assert response.status_code == 200, response.json
    report = response.json
    assert (report["email"], report["name"], report["personal_data"]) == (
        "ann@example.com",
        "Ann",
        "held",
    )
    assert [p["order_id"] for p in report["purchases"]] == ["A-1"]
    assert [e["type"] for e in report["events"]][:2] == ["Enrolled", "PurchaseRecorded"]
    assert report["status"]["email"] == "ann@example.com"
    assert server.call("GET", "/v1/members/ann/personal-data", "admin").status_code == 200


@pytest.mark.parametrize("caller", ["storefront", "auditor", "other member"])
def test_only_admin_and_the_member_read_personal_data(server: Server, caller: str) -> None:
    server.enrol("ann")
    server.enrol("bob")
    who = server.member_token("bob") if caller == "other member" else caller
    assert_problem(server.call("GET", "/v1/members/ann/personal-data", who), 403)
    assert_problem(server.call("DELETE", "/v1/members/ann/personal-data", who), 403)


def test_an_erasure_answers_the_same_receipt_twice_and_every_read_shows_nothing(
    server: Server,
) -> None:
    body = {"member_id": "ann", "email": "ann@example.com", "name": "Ann"}
    server.call("POST", "/v1/members", "storefront", body)
    server.purchase("A-1", "ann")
    first = server.call("DELETE", "/v1/members/ann/personal-data", "admin")
    assert first.status_code == 200, first.json
    assert first.json["erased"] == ["email", "name"]
    assert first.json["actor"]["kind"] == "key" and first.json["actor"]["role"] == "admin"
    again = server.call("DELETE", "/v1/members/ann/personal-data", "admin")
    assert again.status_code == 200 and again.json == first.json
    status = server.call("GET", "/v1/members/ann", "storefront").json
    assert (status["email"], status["name"], status["personal_data"]) == (None, None, "erased")
    assert status["points"]["lifetime_earned"] == 120
    past = server.call("GET", "/v1/members/ann?as_of=2026-11-23T10:00:00Z", "storefront").json
    assert past["email"] is None and past["personal_data"] == "erased"
    report = server.call("GET", "/v1/members/ann/personal-data", "admin").json
    assert (report["email"], report["name"], report["personal_data"]) == (None, None, "erased")
    # The same email enrols a new member as anyone new.
    body = {"member_id": "ann-2", "email": "ann@example.com", "name": "Ann"}
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 201
    # Enrolling the erased member again is a conflict that says why.
    body = {"member_id": "ann", "email": "ann@example.com", "name": "Ann"}
    refused = assert_problem(server.call("POST", "/v1/members", "storefront", body), 409)
    assert "was erased" in refused["detail"]


def test_erasing_an_unknown_member_is_a_404_and_changes_nothing(server: Server) -> None:
    head = server.ledger.recorder.max_notification_id()
    assert_problem(server.call("DELETE", "/v1/members/nobody/personal-data", "admin"), 404)
    assert_problem(server.call("GET", "/v1/members/nobody/personal-data", "admin"), 404)
    assert server.ledger.recorder.max_notification_id() == head


def test_every_event_shows_who_did_it(server: Server) -> None:
    server.enrol("ann")
    server.purchase("A-1", "ann")
    server.clock.advance(timedelta(days=31))  # the lot matures
    token = server.member_token("ann")
    redeemed = server.call(
        "POST", "/v1/members/ann/redemptions", token, {"redemption_id": "R-1", "points": 10}
    )
    assert redeemed.status_code == 201, redeemed.json
    server.ledger.record_due()
    log = server.call("GET", "/v1/events?limit=1000", "auditor").json["items"]
    actors = {item["type"]: item["actor"] for item in log if item["member_id"] == "ann"}
    key = actors["Enrolled"]
    assert key["kind"] == "key" and key["role"] == "storefront" and key["name"] == "e2e storefront"
    assert key["id"]
    assert actors["PointsRedeemed"] == {"kind": "member", "member_id": "ann"}
    assert actors["PointsBecameAvailable"]["kind"] in {"scheduler", "member"}
    assert [item for item in log if item["actor"] is None] == [], "every event has its actor"
    ownership = [item for item in log if item["aggregate"] == "Ownership"]
    assert {item["actor"]["kind"] for item in ownership} == {"key", "member"}
    history = server.call("GET", "/v1/members/ann/events", "auditor").json["items"]
    assert all(item["actor"] is not None for item in history)
    program = [item for item in log if item["type"] == "Published"]
    assert program[0]["actor"] == {"kind": "system", "name": "bootstrap"}
    export = server.call("GET", "/v1/audit/export", "auditor").get_data(as_text=True)
    assert '"actor":{"kind":"member","member_id":"ann"}' in export


def test_a_malformed_master_key_stops_the_server_with_a_clear_message(tmp_path: object) -> None:
    for bad in ("short", "!" * 43, new_master_key() + "AAAA"):
        with pytest.raises(ConfigurationError, match="DAIFUKU_MASTER_KEY must be 32 bytes"):
            Settings.from_environ({"DAIFUKU_MASTER_KEY": bad})
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={"DAIFUKU_MASTER_KEY": "not-a-key", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "DAIFUKU_MASTER_KEY must be 32 bytes" in done.stderr


def test_another_master_key_than_the_one_the_data_was_sealed_with_is_refused(
    database_url: str,
) -> None:
    first = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, _ = bootstrap(first)
    ledger.close()
    keys.close()
    other = Settings.from_environ(
        {"DAIFUKU_DATABASE_URL": database_url, "DAIFUKU_MASTER_KEY": new_master_key()}
    )
    with pytest.raises(ConfigurationError, match="not the master key"):
        bootstrap(other)


def test_a_database_sealed_with_a_given_master_key_does_not_start_without_it(
    database_url: str,
) -> None:
    given = {"DAIFUKU_DATABASE_URL": database_url, "DAIFUKU_MASTER_KEY": new_master_key()}
    ledger, keys, _ = bootstrap(Settings.from_environ(given))
    ledger.close()
    keys.close()
    unset = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    with pytest.raises(ConfigurationError, match="DAIFUKU_MASTER_KEY is not set"):
        bootstrap(unset)
    ledger, keys, _ = bootstrap(Settings.from_environ(given))  # the right key still starts
    ledger.close()
    keys.close()
