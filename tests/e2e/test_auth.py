"""Credentials and roles, as the API.md table says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.keys import mint_member_token, verify_member_token
from domain.plans import DEFAULT_PLANS
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import START, Server

PURCHASE = {"order_id": "A-1", "member_id": "ann", "amount": "10.00", "currency": "USD"}
PLAN = DEFAULT_PLANS["thank-you"].to_dict()

# (method, path, body, roles admitted besides admin); "member" means a token for member "ann".
ENDPOINTS: list[tuple[str, str, Any, set[str]]] = [
    ("POST", "/v1/members", {"member_id": "new-1", "email": "n@example.com"}, {"storefront"}),
    ("GET", "/v1/members/ann", None, {"storefront", "auditor", "member"}),
    ("GET", "/v1/members/ann/events", None, {"auditor", "member"}),
    ("POST", "/v1/members/ann/tokens", {}, {"storefront"}),
    ("POST", "/v1/members/ann/redemptions", {"redemption_id": "R-1"}, {"storefront", "member"}),
    ("POST", "/v1/purchases", PURCHASE, {"storefront"}),
    ("GET", "/v1/purchases/A-0", None, {"storefront", "auditor"}),
    ("POST", "/v1/purchases/A-0/refunds", {"refund_id": "F-1"}, {"storefront"}),
    ("POST", "/v1/redemptions/R-0/cancellation", None, {"storefront"}),
    ("GET", "/v1/program", None, {"storefront", "auditor", "member"}),
    ("GET", "/v1/keys", None, set()),
    ("POST", "/v1/keys", {"name": "n", "role": "auditor"}, set()),
    ("DELETE", "/v1/keys/key_000000000000", None, set()),
    ("POST", "/v1/members/ann/tokens/revocations", {}, {"storefront"}),
    ("GET", "/v1/followup-plans", None, {"storefront", "auditor"}),
    ("GET", "/v1/followup-plans/thank-you", None, {"storefront", "auditor"}),
    ("PUT", "/v1/followup-plans/thank-you", PLAN, set()),
    ("GET", "/v1/members/ann/followups", None, {"storefront", "auditor", "member"}),
    ("POST", "/v1/followups/thank-you~1~ann/steps/1/outcome", {"outcome": "sent"}, {"storefront"}),
]
ROLES = ["storefront", "auditor", "member", "admin"]


def _credential(server: Server, role: str) -> str:
    return server.member_token("ann") if role == "member" else role


@pytest.fixture
def ann(server: Server) -> Server:
    server.enrol("ann")
    server.purchase("A-0", "ann")
    return server


@pytest.mark.parametrize(("method", "path", "body", "admitted"), ENDPOINTS)
def test_each_role_is_admitted_or_refused_as_the_contract_says(
    ann: Server, method: str, path: str, body: Any, admitted: set[str]
) -> None:
    for role in ROLES:
        response = ann.call(method, path, _credential(ann, role), body)
        if role == "admin" or role in admitted:
            assert response.status_code not in (401, 403), (role, response.json)
        else:
            assert_problem(response, 403)


@pytest.mark.parametrize(("method", "path", "body", "admitted"), ENDPOINTS)
def test_no_credentials_is_401_with_a_bearer_challenge(
    ann: Server, method: str, path: str, body: Any, admitted: set[str]
) -> None:
    response = ann.client.open(path, method=method, json=body)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer dfk_not-a-key",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "dfk_missing-scheme",
        "Bearer " + "x" * 600,
        "Bearer dmt1.forged.0.sig",
    ],
)
def test_bad_credentials_are_401(ann: Server, header: str) -> None:
    response = ann.client.get("/v1/members/ann", headers={"Authorization": header})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_bearer_scheme_is_case_insensitive(ann: Server) -> None:
    key = ann.api_keys["auditor"]
    response = ann.client.get("/v1/members/ann", headers={"Authorization": f"bearer {key}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/members/bob", None),
        ("GET", "/v1/members/bob/events", None),
        ("POST", "/v1/members/bob/redemptions", {"redemption_id": "R-9", "points": 1}),
        ("POST", "/v1/members/bob/tokens", {}),
        ("GET", "/v1/purchases/A-0", None),
        ("POST", "/v1/purchases", PURCHASE),
        ("POST", "/v1/members", {"member_id": "x", "email": "x@example.com"}),
        ("PUT", "/v1/program", {}),
    ],
)
def test_a_member_token_is_refused_for_anything_but_its_own_member(
    ann: Server, method: str, path: str, body: Any
) -> None:
    ann.enrol("bob")
    token = ann.member_token("ann")
    response = ann.call(method, path, token, body)
    assert_problem(response, 403)


def test_a_member_token_reads_its_own_status_and_history(ann: Server) -> None:
    token = ann.member_token("ann")
    assert ann.call("GET", "/v1/members/ann", token).json["member_id"] == "ann"
    events = ann.call("GET", "/v1/members/ann/events", token)
    assert events.status_code == 200
    assert events.json["items"][0]["type"] == "Enrolled"


def test_a_minted_token_lasts_the_default_hour(ann: Server) -> None:
    response = ann.call("POST", "/v1/members/ann/tokens", "storefront", {})
    assert response.status_code == 201
    assert response.json["expires_at"] == "2026-11-23T11:00:00+00:00"
    assert verify_member_token(ann.secret, response.json["token"], START) == "ann"


def test_an_expired_member_token_is_401(ann: Server) -> None:
    token = ann.member_token("ann", ttl_seconds=60)
    assert ann.call("GET", "/v1/members/ann", token).status_code == 200
    ann.clock.advance(timedelta(seconds=60))
    response = ann.call("GET", "/v1/members/ann", token)
    assert_problem(response, 401)
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_a_token_signed_with_another_secret_is_401(ann: Server) -> None:
    forged = mint_member_token(
        b"another secret", "ann", START + timedelta(hours=1), issued_at=START
    )
    assert_problem(ann.call("GET", "/v1/members/ann", forged), 401)


def test_a_token_whose_member_was_altered_is_401(ann: Server) -> None:
    ann.enrol("bob")
    token = ann.member_token("ann")
    bob_token = mint_member_token(b"x", "bob", START + timedelta(hours=1), issued_at=START)
    prefix, _, issued, expiry, signature = token.split(".")
    altered = ".".join([prefix, bob_token.split(".")[1], issued, expiry, signature])
    assert_problem(ann.call("GET", "/v1/members/bob", altered), 401)


def test_no_token_for_an_unknown_member(server: Server) -> None:
    response = server.call("POST", "/v1/members/nobody/tokens", "storefront", {})
    assert_problem(response, 404)


@pytest.mark.parametrize("ttl", [0, 86401, -5, 1.5, "60", True])
def test_token_lifetime_is_1_to_86400_seconds(ann: Server, ttl: Any) -> None:
    response = ann.call("POST", "/v1/members/ann/tokens", "storefront", {"ttl_seconds": ttl})
    body = assert_problem(response, 422)
    assert "ttl_seconds" in body["errors"]
