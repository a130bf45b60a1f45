"""Enrolment in the past (``enrolled_at``): the member's business time starts there, so its
history posted afterwards takes effect on its own days, not all at once today."""

from __future__ import annotations

from .assertions import assert_invalid, assert_problem
from .conftest import Server

YEARS_AGO = "2025-01-10T09:00:00+00:00"  # START is 2026-11-23


def enrol(server: Server, member_id: str, enrolled_at: str | None) -> dict[str, object]:
    body = {"member_id": member_id, "email": f"{member_id}@example.com"}
    if enrolled_at is not None:
        body["enrolled_at"] = enrolled_at
    response = server.call("POST", "/v1/members", "storefront", body)
    assert response.status_code == 201, response.json
    return dict(response.json or {})


def buy(server: Server, order_id: str, member_id: str, amount: str, at: str) -> None:
    body = {
        "order_id": order_id,
        "member_id": member_id,
        "amount": amount,
        "currency": "USD",
        "occurred_at": at,
    }
    response = server.call("POST", "/v1/purchases", "storefront", body)
    assert response.status_code == 201, response.json


def test_a_backdated_history_is_applied_on_its_own_days(server: Server) -> None:
    # Two 300.00 orders a year apart: never 500 within 365 days, so never silver.
    status = enrol(server, "old", YEARS_AGO)
    assert status["enrolled_at"] == YEARS_AGO
    buy(server, "O-1", "old", "300.00", "2025-02-01T10:00:00+00:00")
    buy(server, "O-2", "old", "300.00", "2026-03-01T10:00:00+00:00")
    old = server.call("GET", "/v1/members/old", "storefront").json
    # Enrolled today, the same orders collapse onto today: 600 within a year, silver.
    enrol(server, "new", None)
    buy(server, "N-1", "new", "300.00", "2025-02-01T10:00:00+00:00")
    buy(server, "N-2", "new", "300.00", "2026-03-01T10:00:00+00:00")
    new = server.call("GET", "/v1/members/new", "storefront").json
    assert (old["tier"]["name"], new["tier"]["name"]) == ("bronze", "silver")
    assert old["tier"]["qualifying_spend"] == "300.00"
    assert old["points"]["available"] == 600 and old["points"]["pending"] == 0


def test_enrolled_at_more_than_five_minutes_ahead_is_refused(server: Server) -> None:
    head = server.ledger.recorder.max_notification_id()
    body = {"member_id": "ann", "email": "a@example.com", "enrolled_at": "2026-11-23T10:06:00Z"}
    assert_problem(server.call("POST", "/v1/members", "storefront", body), 422)
    assert server.ledger.recorder.max_notification_id() == head
    body["enrolled_at"] = "2026-11-23T10:00:00"  # no offset: ambiguous
    assert_invalid(server.call("POST", "/v1/members", "storefront", body), "enrolled_at")
    body["enrolled_at"] = "2026-11-23T10:04:00Z"  # within the five minutes
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 201


def test_enrolling_again_with_another_enrolled_at_is_a_conflict(server: Server) -> None:
    enrol(server, "ann", YEARS_AGO)
    body = {"member_id": "ann", "email": "ann@example.com"}
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 200
    body["enrolled_at"] = YEARS_AGO
    assert server.call("POST", "/v1/members", "storefront", body).status_code == 200
    body["enrolled_at"] = "2025-01-11T09:00:00+00:00"
    assert_problem(server.call("POST", "/v1/members", "storefront", body), 409)
