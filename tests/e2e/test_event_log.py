"""GET /v1/events: the whole ledger in recorded order, for auditors."""

from __future__ import annotations

from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import Server


def test_the_log_pages_every_event_in_recorded_order(server: Server) -> None:
    server.enrol("ann")
    server.purchase("A-1", "ann", "120.00")
    server.purchase("A-2", "ann", "600.00")

    first = server.call("GET", "/v1/events?limit=2", "auditor")
    assert first.status_code == 200, first.json
    assert len(first.json["items"]) == 2
    rest = server.call("GET", f"/v1/events?after={first.json['next']}&limit=1000", "auditor")
    items = first.json["items"] + rest.json["items"]
    assert rest.json["next"] is None

    positions = [item["position"] for item in items]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    member_events = [i for i in items if i["aggregate"] == "Member" and i["member_id"] == "ann"]
    assert [item["type"] for item in member_events] == [
        "Enrolled",
        "PurchaseRecorded",
        "PurchaseRecorded",
        "TierUpgraded",
    ]
    upgrade = member_events[-1]
    assert upgrade["data"]["to_tier"] == "silver" and upgrade["data"]["order_id"] == "A-2"
    assert upgrade["recorded_at"].endswith("+00:00")


def test_only_auditors_and_admins_read_the_log(server: Server) -> None:
    server.enrol("ann")
    assert server.call("GET", "/v1/events", "admin").status_code == 200
    assert_problem(server.call("GET", "/v1/events", "storefront"), 403)
    assert_problem(server.call("GET", "/v1/events", server.member_token("ann")), 403)
    assert_problem(server.client.get("/v1/events"), 401)


def test_a_bad_page_request_is_422(server: Server) -> None:
    assert_invalid(server.call("GET", "/v1/events?limit=0", "auditor"), "limit")
    assert_invalid(server.call("GET", "/v1/events?after=-1", "auditor"), "after")
    assert_invalid(server.call("GET", "/v1/events?after=x", "auditor"), "after")
