"""Every error is a problem document with the right status; bad input is never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import Server

ORDER = {"order_id": "A-1", "member_id": "ann", "amount": "120.00", "currency": "USD"}


@pytest.fixture
def ann(server: Server) -> Server:
    server.enrol("ann")
    return server


def post_raw(server: Server, path: str, data: bytes | str) -> Any:
    headers = {**server.auth("storefront"), "Content-Type": "application/json"}
    return server.client.post(path, data=data, headers=headers)


@pytest.mark.parametrize("data", ['{"order_id": "A-1",', "not json", "{'a': 1}", "[1, 2", "\xff"])
def test_malformed_json_is_400(ann: Server, data: str) -> None:
    body = assert_problem(post_raw(ann, "/v1/purchases", data), 400)
    assert "JSON" in body["detail"]


@pytest.mark.parametrize("data", ["[]", '"a string"', "42", "null", "true"])
def test_a_body_that_is_not_an_object_is_400(ann: Server, data: str) -> None:
    assert_problem(post_raw(ann, "/v1/purchases", data), 400)


def test_nan_is_not_json(ann: Server) -> None:
    data = '{"member_id": "ann", "redemption_id": "R-1", "points": NaN}'
    assert_problem(post_raw(ann, "/v1/members/ann/redemptions", data), 400)


def test_a_body_over_one_mebibyte_is_413(ann: Server) -> None:
    data = '{"order_id": "' + "x" * (1024 * 1024) + '"}'
    assert_problem(post_raw(ann, "/v1/purchases", data), 413)


def test_a_body_just_under_the_limit_is_read(ann: Server) -> None:
    data = '{"reason": "' + "x" * (1024 * 1024 - 100) + '"}'
    errors = assert_invalid(post_raw(ann, "/v1/purchases", data), "order_id", "reason")
    assert errors["order_id"] == ["Missing data for required field."]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 120.0}, "amount"),
        ({"amount": 120}, "amount"),
        ({"amount": "12O.00"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": "-5.00"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "10.001"}, "amount"),
        ({"amount": "1000000.01"}, "amount"),
        ({"amount": None}, "amount"),
        ({"order_id": 17}, "order_id"),
        ({"order_id": "has space"}, "order_id"),
        ({"order_id": "x" * 65}, "order_id"),
        ({"member_id": ["ann"]}, "member_id"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "EUR"}, "currency"),
        ({"occurred_at": "2026-11-23T09:00:00"}, "occurred_at"),
        ({"occurred_at": "2026-11-23"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": 1700000000}, "occurred_at"),
        ({"occurred_at": "2026-02-30T10:00:00+00:00"}, "occurred_at"),
        ({"guarantee": "lifetime"}, "guarantee"),
        ({"points": 5}, "points"),
        ({"items": {"sku": "a"}}, "items"),
        ({"items": [{"sku": "a", "category": "c", "quantity": 1}]}, "items.0.unit_price"),
        (
            {"items": [{"sku": "a", "category": "c", "quantity": 1.5, "unit_price": "1.00"}]},
            "items.0.quantity",
        ),
        (
            {"items": [{"sku": "a", "category": "c", "quantity": 1, "unit_price": 1.0}]},
            "items.0.unit_price",
        ),
        (
            {"items": [{"sku": "a", "category": "c", "quantity": 1, "unit_price": "1", "x": 1}]},
            "items.0.x",
        ),
    ],
)
def test_a_purchase_that_breaks_the_schema_or_the_rules_is_422_naming_the_field(
    ann: Server, change: dict[str, Any], field: str
) -> None:
    response = ann.call("POST", "/v1/purchases", "storefront", {**ORDER, **change})
    assert_invalid(response, field)
    assert ann.call("GET", "/v1/purchases/A-1", "auditor").status_code == 404


def test_missing_required_fields_are_all_named(ann: Server) -> None:
    response = ann.call("POST", "/v1/purchases", "storefront", {})
    assert_invalid(response, "order_id", "member_id", "amount", "currency")


def test_an_unknown_field_is_refused_not_ignored(ann: Server) -> None:
    response = ann.call("POST", "/v1/members", "storefront", {**_enrolment("bob"), "vip": True})
    errors = assert_invalid(response, "vip")
    assert errors["vip"] == ["Unknown field."]
    assert ann.call("GET", "/v1/members/bob", "auditor").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("as_of=2026-11-23T10:00:00", "as_of"),
        ("as_of=tomorrow", "as_of"),
        ("as_of=", "as_of"),
    ],
)
def test_a_bad_as_of_is_422(ann: Server, query: str, field: str) -> None:
    assert_invalid(ann.call("GET", f"/v1/members/ann?{query}", "auditor"), field)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%%%", "cursor"),
    ],
)
def test_bad_paging_is_422(ann: Server, query: str, field: str) -> None:
    assert_invalid(ann.call("GET", f"/v1/members/ann/events?{query}", "auditor"), field)


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/members/bad$id", "member_id"),
        ("GET", "/v1/members/" + "m" * 65, "member_id"),
        ("GET", "/v1/purchases/bad%20id", "order_id"),
        ("POST", "/v1/redemptions/bad!id/cancellation", "redemption_id"),
    ],
)
def test_a_malformed_id_in_the_path_is_422(
    server: Server, method: str, path: str, field: str
) -> None:
    assert_invalid(server.call(method, path, "admin"), field)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/members/nobody", None),
        ("GET", "/v1/members/nobody/events", None),
        ("GET", "/v1/purchases/no-such-order", None),
        ("POST", "/v1/purchases/no-such-order/refunds", {"refund_id": "F-1"}),
        ("POST", "/v1/redemptions/no-such-redemption/cancellation", None),
        ("POST", "/v1/purchases", {**ORDER, "member_id": "nobody"}),
        ("POST", "/v1/members/nobody/redemptions", {"redemption_id": "R-1", "points": 10}),
    ],
)
def test_unknown_resources_are_404(server: Server, method: str, path: str, body: Any) -> None:
    assert_problem(server.call(method, path, "admin", body), 404)


def test_an_unknown_route_is_a_404_problem(server: Server) -> None:
    assert_problem(server.call("GET", "/v1/no-such-thing"), 404)


def test_a_wrong_method_is_a_405_problem_with_allow(server: Server) -> None:
    response = server.call("DELETE", "/v1/members")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_repeating_an_enrolment_is_200_with_the_first_response(server: Server) -> None:
    first = server.call("POST", "/v1/members", "storefront", _enrolment("ann"))
    again = server.call("POST", "/v1/members", "storefront", _enrolment("ann"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["member_id"] == "ann"
    assert again.json["referral_code"] == first.json["referral_code"]


def test_the_same_member_id_with_other_data_is_409(server: Server) -> None:
    server.call("POST", "/v1/members", "storefront", _enrolment("ann"))
    other = {**_enrolment("ann"), "email": "someone-else@example.com"}
    body = assert_problem(server.call("POST", "/v1/members", "storefront", other), 409)
    assert "email" in body["errors"]


def test_repeating_a_purchase_is_200_and_awards_nothing_more(ann: Server) -> None:
    first = ann.call("POST", "/v1/purchases", "storefront", ORDER)
    again = ann.call("POST", "/v1/purchases", "storefront", ORDER)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    status = ann.call("GET", "/v1/members/ann", "auditor").json
    assert status["points"]["lifetime_earned"] == first.json["points_awarded"]


def test_the_same_order_id_with_another_amount_is_409(ann: Server) -> None:
    ann.call("POST", "/v1/purchases", "storefront", ORDER)
    changed = {**ORDER, "amount": "99.00"}
    body = assert_problem(ann.call("POST", "/v1/purchases", "storefront", changed), 409)
    assert "amount" in body["errors"]


def test_repeating_a_refund_is_200_and_a_changed_one_409(ann: Server) -> None:
    ann.call("POST", "/v1/purchases", "storefront", ORDER)
    refund = {"refund_id": "F-1", "amount": "20.00", "reason": "broken"}
    path = "/v1/purchases/A-1/refunds"
    assert ann.call("POST", path, "storefront", refund).status_code == 201
    assert ann.call("POST", path, "storefront", refund).status_code == 200
    assert_problem(ann.call("POST", path, "storefront", {**refund, "amount": "30.00"}), 409)


def test_refunding_more_than_the_order_is_422(ann: Server) -> None:
    ann.call("POST", "/v1/purchases", "storefront", ORDER)
    response = ann.call(
        "POST", "/v1/purchases/A-1/refunds", "storefront", {"refund_id": "F-1", "amount": "500.00"}
    )
    assert_problem(response, 422)


def test_redeeming_without_points_is_422(ann: Server) -> None:
    response = ann.call(
        "POST", "/v1/members/ann/redemptions", "storefront", {"redemption_id": "R-1", "points": 10}
    )
    body = assert_problem(response, 422)
    assert body["type"].endswith("/insufficient-points")


def test_an_unknown_referral_code_is_422_with_its_type(server: Server) -> None:
    enrolment = {**_enrolment("bob"), "referral_code": "ZZZZ-ZZZZ"}
    body = assert_problem(server.call("POST", "/v1/members", "storefront", enrolment), 422)
    assert body["type"] == "https://daifuku.dev/problems/unknown-referral-code"
    assert set(body["errors"]) == {"referral_code"}


@pytest.mark.parametrize(
    "body",
    [
        {"redemption_id": "R-1"},
        {"redemption_id": "R-1", "reward": "coffee", "points": 500},
        {"redemption_id": "R-1", "points": 0},
        {"redemption_id": "R-1", "points": "10"},
    ],
)
def test_a_redemption_names_a_reward_or_a_positive_number_of_points(
    ann: Server, body: dict[str, Any]
) -> None:
    response = ann.call("POST", "/v1/members/ann/redemptions", "storefront", body)
    errors = assert_invalid(response)
    assert {"reward", "points"} & set(errors)


def test_a_bug_is_a_500_problem_without_a_traceback(
    ann: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal secret: connection string postgres://user:pw@db")

    monkeypatch.setattr(ann.ledger, "member_status", broken)
    response = ann.call("GET", "/v1/members/ann", "auditor")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text
    assert body["type"] == "about:blank"


def test_every_response_carries_a_request_id(server: Server) -> None:
    mine = server.client.get("/healthz", headers={"X-Request-Id": "req-42"})
    assert mine.headers["X-Request-Id"] == "req-42"
    made_up = server.client.get("/healthz", headers={"X-Request-Id": "no spaces <allowed>"})
    assert made_up.headers["X-Request-Id"] not in ("", "no spaces <allowed>")
    error = server.client.get("/v1/members/ann")
    assert len(error.headers["X-Request-Id"]) == 32


def _enrolment(member_id: str) -> dict[str, Any]:
    return {"member_id": member_id, "email": f"{member_id}@example.com", "name": "Ann"}
