"""The happy paths of each resource, through HTTP, against the real ledger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.answers import answers
from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import START, Server


@pytest.fixture
def ann(server: Server) -> Server:
    server.enrol("ann")
    return server


def test_enrolment_answers_the_member_status(server: Server) -> None:
    body = {"member_id": "cust-1001", "email": "ann@example.com", "name": "Ann"}
    response = server.call("POST", "/v1/members", "storefront", body)
    assert response.status_code == 201
    status = response.json
    assert status["member_id"] == "cust-1001"
    assert status["stage"] == "prospect"
    assert status["tier"]["name"] == "bronze"
    assert status["points"]["available"] == 0
    assert len(status["referral_code"]) == 8
    assert status["as_of"] == START.isoformat()


def test_the_status_body_is_the_ledgers_status(ann: Server) -> None:
    ann.purchase("A-1", "ann")
    response = ann.call("GET", "/v1/members/ann", "storefront")
    assert response.json == answers(ann.ledger).member_status("ann")


def test_status_as_of_an_earlier_instant(ann: Server) -> None:
    ann.clock.advance(timedelta(hours=1))
    ann.purchase("A-1", "ann")
    before = ann.call("GET", "/v1/members/ann?as_of=2026-11-23T10:30:00%2B00:00", "auditor")
    assert before.status_code == 200
    assert before.json["stage"] == "prospect"
    assert before.json["points"]["pending"] == 0
    now = ann.call("GET", "/v1/members/ann", "auditor").json
    assert now["stage"] == "new"
    assert now["points"]["pending"] == 120


def test_status_as_of_accepts_other_offsets_and_z(ann: Server) -> None:
    for moment in ("2026-11-23T19:30:00%2B09:00", "2026-11-23T10:30:00Z"):
        response = ann.call("GET", f"/v1/members/ann?as_of={moment}", "auditor")
        assert response.status_code == 200, response.json


def test_a_purchase_earns_points_pending_until_the_return_window_ends(ann: Server) -> None:
    body = {
        "order_id": "A-77",
        "member_id": "ann",
        "amount": "120.00",
        "currency": "USD",
        "occurred_at": "2026-11-23T09:00:00+00:00",
        "items": [{"sku": "tea", "category": "drinks", "quantity": 2, "unit_price": "60.00"}],
        "guarantee": "satisfaction",
    }
    response = ann.call("POST", "/v1/purchases", "storefront", body)
    assert response.status_code == 201, response.json
    purchase = response.json
    assert purchase["amount"] == "120.00"
    assert purchase["points_awarded"] == 120
    assert purchase["bonus_points"] == 50
    assert purchase["tier"] == "bronze" and purchase["tier_changed"] is False
    assert purchase["guarantee"]["policy"] == "satisfaction"
    assert purchase["guarantee"]["refund_percent"] == 100

    view = ann.call("GET", "/v1/purchases/A-77", "auditor")
    assert view.status_code == 200
    assert view.json["items"] == [
        {"sku": "tea", "category": "drinks", "quantity": 2, "unit_price": "60.00"}
    ]
    assert view.json == answers(ann.ledger).purchase("A-77")


def test_a_refund_claws_back_points_and_shows_on_the_purchase(ann: Server) -> None:
    ann.purchase("A-1", "ann", "100.00")
    response = ann.call(
        "POST",
        "/v1/purchases/A-1/refunds",
        "storefront",
        {"refund_id": "F-1", "amount": "25.00", "reason": "damaged"},
    )
    assert response.status_code == 201, response.json
    assert response.json["amount"] == "25.00"
    assert response.json["points_clawed_back"] == 25
    purchase = ann.call("GET", "/v1/purchases/A-1", "storefront").json
    assert purchase["refunded_amount"] == "25.00"
    assert [r["refund_id"] for r in purchase["refunds"]] == ["F-1"]


def test_a_refund_without_amount_refunds_the_rest(ann: Server) -> None:
    ann.purchase("A-1", "ann", "100.00")
    response = ann.call("POST", "/v1/purchases/A-1/refunds", "storefront", {"refund_id": "F-1"})
    assert response.status_code == 201
    assert response.json["amount"] == "100.00"


def test_redeeming_and_cancelling(ann: Server) -> None:
    ann.purchase("A-1", "ann", "700.00")
    ann.clock.advance(timedelta(days=31))
    token = ann.member_token("ann")
    redeem = ann.call(
        "POST", "/v1/members/ann/redemptions", token, {"redemption_id": "R-1", "reward": "coffee"}
    )
    assert redeem.status_code == 201, redeem.json
    assert redeem.json["points"] == 500
    assert redeem.json["points_available"] == 200
    again = ann.call(
        "POST", "/v1/members/ann/redemptions", token, {"redemption_id": "R-1", "reward": "coffee"}
    )
    assert again.status_code == 200
    changed = ann.call(
        "POST", "/v1/members/ann/redemptions", token, {"redemption_id": "R-1", "points": 10}
    )
    assert_problem(changed, 409)

    cancel = ann.call("POST", "/v1/redemptions/R-1/cancellation", "storefront")
    assert cancel.status_code == 201, cancel.json
    assert cancel.json["cancelled_at"] == ann.clock.now().isoformat()
    assert cancel.json["points_available"] == 700
    assert ann.call("POST", "/v1/redemptions/R-1/cancellation", "storefront").status_code == 200


def test_an_unknown_reward_is_422(ann: Server) -> None:
    response = ann.call(
        "POST",
        "/v1/members/ann/redemptions",
        "storefront",
        {"redemption_id": "R-1", "reward": "yacht"},
    )
    assert_problem(response, 422)


def test_events_are_paged_oldest_first_with_an_opaque_cursor(ann: Server) -> None:
    for n in range(4):
        ann.purchase(f"A-{n}", "ann", "10.00")
    seen: list[dict[str, Any]] = []
    path = "/v1/members/ann/events?limit=2"
    pages = 0
    while path:
        page = ann.call("GET", path, "auditor")
        assert page.status_code == 200, page.json
        assert len(page.json["items"]) <= 2
        seen += page.json["items"]
        pages += 1
        cursor = page.json["next"]
        assert cursor is None or not cursor.isdigit()
        path = f"/v1/members/ann/events?limit=2&cursor={cursor}" if cursor else ""
    versions = [event["version"] for event in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert len(seen) == len(ann.ledger.member_events("ann", limit=1000))
    assert pages == 3
    assert seen[0]["type"] == "Enrolled"
    assert {"version", "type", "recorded_at", "occurred_at", "data"} <= set(seen[0])


def test_the_default_page_is_100_events(ann: Server) -> None:
    page = ann.call("GET", "/v1/members/ann/events", "auditor").json
    assert page["next"] is None
    assert len(page["items"]) == 1


def test_every_event_records_the_request_that_caused_it(ann: Server) -> None:
    body = {"order_id": "A-1", "member_id": "ann", "amount": "10.00", "currency": "USD"}
    response = ann.call(
        "POST", "/v1/purchases", "storefront", body, headers={"X-Request-Id": "checkout-981"}
    )
    assert response.headers["X-Request-Id"] == "checkout-981"
    events = ann.call("GET", "/v1/members/ann/events", "auditor").json["items"]
    assert events[-1]["data"]["cause"] == "checkout-981"


def test_the_program_is_readable_by_every_role(ann: Server) -> None:
    token = ann.member_token("ann")
    for who in ("storefront", "auditor", "admin", token):
        response = ann.call("GET", "/v1/program", who)
        assert response.status_code == 200
        assert response.json["version"] == 1
        assert response.json["rules"]["currency"] == "USD"
        assert response.json["rules"] == ann.ledger.program().rules.to_dict()


def test_an_admin_publishes_a_new_program_version(server: Server) -> None:
    rules = server.call("GET", "/v1/program", "auditor").json["rules"]
    rules["earning"]["cross_sell_bonus"] = 75
    response = server.call("PUT", "/v1/program", "admin", rules)
    assert response.status_code == 200, response.json
    assert response.json["version"] == 2
    assert response.json["rules"]["earning"]["cross_sell_bonus"] == 75
    assert server.call("GET", "/v1/program", "storefront").json["version"] == 2


def test_a_program_that_breaks_the_rules_is_422_and_not_published(server: Server) -> None:
    rules = server.call("GET", "/v1/program", "auditor").json["rules"]
    rules["tiers"][1]["threshold"] = "-1"
    rules["earning"]["return_window_days"] = "30"
    del rules["referrals"]
    errors = assert_invalid(
        server.call("PUT", "/v1/program", "admin", rules),
        "earning.return_window_days",
        "referrals",
    )
    assert errors
    rules = server.call("GET", "/v1/program", "auditor").json["rules"]
    rules["tiers"][1]["threshold"] = "-1"
    assert_invalid(server.call("PUT", "/v1/program", "admin", rules), "tiers.1.threshold")
    assert server.call("GET", "/v1/program", "auditor").json["version"] == 1


def test_only_an_admin_publishes_the_program(server: Server) -> None:
    rules = server.call("GET", "/v1/program", "auditor").json["rules"]
    for role in ("storefront", "auditor"):
        assert_problem(server.call("PUT", "/v1/program", role, rules), 403)
