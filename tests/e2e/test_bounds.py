"""Every integer a request carries has documented bounds; past them it is a 422, on both stores.

Found by fuzzing: ``GET /v1/events?after=39928970562803556352`` answered 500 on SQLite
(``OverflowError: Python int too large to convert to SQLite INTEGER``).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from domain.eventlog import MAX_POSITION
from domain.program import WHOLE_NUMBER_BOUNDS
from tests.e2e.assertions import assert_invalid
from tests.e2e.conftest import Server

HUGE = 39928970562803556352  # the fuzzer's number: past 2**64
PAST_POSITIONS = [-1, MAX_POSITION + 1, HUGE]


@pytest.fixture
def shop(server: Server) -> Server:
    server.enrol("ann")
    server.purchase("A-1", "ann", "120.00")
    return server


def head(server: Server) -> int:
    return server.ledger.recorder.max_notification_id() or 0


def cursor(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def request_integers(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) of every integer in a request parameter or body of the document."""
    components = document["components"]["schemas"]

    def walk(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in schema:
            yield from walk(components[schema["$ref"].rsplit("/", 1)[-1]], where)
            return
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, []):
                yield from walk(sub, where)
        types = schema.get("type")
        if "integer" in (types if isinstance(types, list) else [types]):
            yield where, schema
        for name, sub in schema.get("properties", {}).items():
            yield from walk(sub, f"{where}.{name}")
        if isinstance(schema.get("items"), dict):
            yield from walk(schema["items"], f"{where}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            yield from walk(schema["additionalProperties"], f"{where}{{}}")

    for path, operations in document["paths"].items():
        shared = operations.get("parameters", [])
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for parameter in shared + operation.get("parameters", []):
                where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                yield from walk(parameter.get("schema", {}), where)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                yield from walk(content["schema"], f"{method.upper()} {path} body")


def test_every_integer_of_a_request_has_documented_bounds(server: Server) -> None:
    document = server.client.get("/openapi.json").json
    found = dict(request_integers(document))
    unbounded = [w for w, s in found.items() if "minimum" not in s or "maximum" not in s]
    assert not unbounded, unbounded
    positions = [w for w in found if w.endswith("query after")]
    assert len(positions) == 4, positions
    assert all(found[w]["minimum"] == 0 for w in positions)
    assert all(found[w]["maximum"] == MAX_POSITION == 2**63 - 1 for w in positions)
    rules = {w.removeprefix("PUT /v1/program body.").replace("[]", ".*") for w in found}
    assert set(WHOLE_NUMBER_BOUNDS) <= rules
    for where, schema in found.items():
        rule = where.removeprefix("PUT /v1/program body.").replace("[]", ".*")
        if rule in WHOLE_NUMBER_BOUNDS:
            assert (schema["minimum"], schema["maximum"]) == WHOLE_NUMBER_BOUNDS[rule], where


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?limit=587&after={}",
        "/v1/members/ann?after={}",
        "/v1/members/ann/referrals?after={}",
        "/v1/purchases/A-1?after={}",
    ],
)
def test_a_position_out_of_range_is_422(shop: Server, path: str) -> None:
    before = head(shop)
    for after in PAST_POSITIONS:
        errors = assert_invalid(shop.call("GET", path.format(after), "admin"), "after")
        assert "9223372036854775807" in " ".join(errors["after"])
    assert head(shop) == before


def test_the_last_position_a_store_holds_is_a_valid_empty_page(shop: Server) -> None:
    response = shop.call("GET", f"/v1/events?after={MAX_POSITION}", "auditor")
    assert response.status_code == 200, response.json
    assert response.json == {"items": [], "next": None}
    assert shop.ledger.event_log(after=MAX_POSITION) == []
    assert shop.ledger.event_log(after=HUGE) == []
    assert shop.ledger.member_events("ann", after=HUGE) == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?limit={}",
        "/v1/members/ann/events?limit={}",
        "/v1/members/ann/referrals?limit={}",
        "/v1/analytics/members?limit={}",
    ],
)
def test_a_page_size_out_of_range_is_422(shop: Server, path: str) -> None:
    for limit in (0, -1, 1001, HUGE):
        errors = assert_invalid(shop.call("GET", path.format(limit), "admin"), "limit")
        assert "1000" in " ".join(errors["limit"])


def test_a_cursor_past_the_last_position_is_422(shop: Server) -> None:
    for path in ("/v1/members/ann/events", "/v1/members/ann/referrals", "/v1/analytics/members"):
        for after in (MAX_POSITION + 1, HUGE):
            response = shop.call("GET", f"{path}?cursor={cursor(after)}", "admin")
            assert_invalid(response, "cursor")


def test_a_cursor_at_the_last_position_is_an_empty_page(shop: Server) -> None:
    response = shop.call("GET", f"/v1/members/ann/events?cursor={cursor(MAX_POSITION)}")
    assert response.status_code == 200, response.json
    assert response.json == {"items": [], "next": None}


def test_a_number_out_of_range_in_a_write_is_422_and_records_nothing(shop: Server) -> None:
    before = head(shop)
    for ttl in (0, 86401, HUGE):
        response = shop.call("POST", "/v1/members/ann/tokens", "storefront", {"ttl_seconds": ttl})
        assert_invalid(response, "ttl_seconds")
        assert "token" not in (response.json or {})
    for points in (0, -5, 100_000_001, HUGE):
        body = {"redemption_id": "R-1", "points": points}
        response = shop.call("POST", "/v1/members/ann/redemptions", "storefront", body)
        assert_invalid(response, "points")
    order = {"order_id": "B-1", "member_id": "ann", "amount": "1.00", "currency": "USD"}
    for quantity in (0, 1_000_001, HUGE):
        item = {"sku": "tea", "category": "drinks", "quantity": quantity, "unit_price": "1.00"}
        response = shop.call("POST", "/v1/purchases", "storefront", {**order, "items": [item]})
        assert_invalid(response, "items.0.quantity")
    assert head(shop) == before
    assert shop.call("GET", "/v1/purchases/B-1", "storefront").status_code == 404
    assert shop.call("GET", "/v1/members/ann", "storefront").json["points"]["redeemed"] == 0


def set_rule(rules: dict[str, Any], rule: str, value: int) -> str:
    """Set ``rule`` (``*`` meaning the first item) in a rules document; its error path."""
    *parents, name = rule.split(".")
    node: Any = rules
    path = []
    for part in parents:
        key: Any = 0 if part == "*" else part
        node = node[key]
        path.append(str(key))
    node[name] = value
    return ".".join([*path, name])


def test_a_program_rule_out_of_range_is_422_and_publishes_nothing(server: Server) -> None:
    current = server.call("GET", "/v1/program", "admin").json
    before = head(server)
    for rule, (low, high) in WHOLE_NUMBER_BOUNDS.items():
        for value in (low - 1, high + 1, HUGE):
            rules = copy.deepcopy(current["rules"])
            field = set_rule(rules, rule, value)
            errors = assert_invalid(server.call("PUT", "/v1/program", "admin", rules), field)
            assert f"{low}" in " ".join(errors[field]) and f"{high}" in " ".join(errors[field])
    assert head(server) == before
    assert server.call("GET", "/v1/program", "admin").json == current


def test_a_program_rule_at_its_bounds_is_published(server: Server) -> None:
    rules = server.call("GET", "/v1/program", "admin").json["rules"]
    for rule, (low, high) in WHOLE_NUMBER_BOUNDS.items():
        set_rule(rules, rule, high if rule != "earning.return_window_days" else low)
    response = server.call("PUT", "/v1/program", "admin", rules)
    assert response.status_code == 200, response.json
    assert response.json["rules"] == rules
