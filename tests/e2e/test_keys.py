"""Keys and member-token revocations through HTTP: GET/POST/DELETE /v1/keys and
POST /v1/members/{id}/tokens/revocations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import g

from adapters.keys import LEGACY_MEMBER_TOKEN_PREFIX, _b64encode, _sign
from api.auth import authenticate
from tests.e2e.assertions import assert_invalid, assert_problem
from tests.e2e.conftest import START, Server


def key_of(server: Server, role: str) -> dict[str, Any]:
    """The listed record of the fixture's key for this role."""
    items = server.call("GET", "/v1/keys").json["items"]
    (found,) = [item for item in items if item["name"] == f"e2e {role}"]
    return dict(found)


def legacy_token(server: Server, member_id: str, expires_in: timedelta) -> str:
    """A member token as the first version minted it: it does not say when it was issued."""
    payload = (
        f"{LEGACY_MEMBER_TOKEN_PREFIX}.{_b64encode(member_id.encode())}"
        f".{int((START + expires_in).timestamp())}"
    )
    return f"{payload}.{_sign(server.secret, payload)}"


def test_an_admin_creates_a_key_whose_secret_is_shown_once_and_works(server: Server) -> None:
    response = server.call("POST", "/v1/keys", json={"name": "pos terminal", "role": "storefront"})
    assert response.status_code == 201
    created = response.json
    secret = created.pop("secret")
    assert secret.startswith("dfk_")
    assert created == {
        "key_id": created["key_id"],
        "name": "pos terminal",
        "role": "storefront",
        "state": "active",
        "created_at": START.isoformat(),
        "last_used_at": None,
        "expires_at": None,
        "revoked_at": None,
    }
    assert server.call("GET", "/v1/members/nobody", secret).status_code == 404
    listed = server.call("GET", "/v1/keys")
    assert secret not in listed.get_data(as_text=True)
    assert "secret" not in listed.get_data(as_text=True)
    (mine,) = [item for item in listed.json["items"] if item["key_id"] == created["key_id"]]
    assert mine == {**created, "last_used_at": START.isoformat()}


def test_the_key_list_is_paged_oldest_first(server: Server) -> None:
    for n in range(3):
        server.clock.advance(timedelta(seconds=1))
        server.call("POST", "/v1/keys", json={"name": f"extra {n}", "role": "auditor"})
    names: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = server.call("GET", f"/v1/keys{query}").json
        assert len(page["items"]) <= 2
        names.extend(item["name"] for item in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert names[-3:] == ["extra 0", "extra 1", "extra 2"]
    assert sorted(names[:3]) == ["e2e admin", "e2e auditor", "e2e storefront"]
    assert_invalid(server.call("GET", "/v1/keys?cursor=bm9wZQ"), "cursor")


INVALID_KEY_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"role": "auditor"}, "name"),
    ({"name": "x", "role": "member"}, "role"),
    ({"name": "", "role": "auditor"}, "name"),
    ({"name": " ", "role": "auditor"}, "name"),  # found by the fuzzer: was a 500
    ({"name": "\n\t", "role": "auditor"}, "name"),
    ({"name": "x" * 101, "role": "auditor"}, "name"),
    ({"name": "x", "role": "auditor", "expires_at": "2026-11-23T09:00:00+00:00"}, "expires_at"),
    ({"name": "x", "role": "auditor", "expires_at": "2027-01-01T00:00:00"}, "expires_at"),
    ({"name": "x", "role": "auditor", "secret": "dfk_mine"}, "secret"),
]


def test_a_key_request_that_breaks_the_rules_is_422(server: Server) -> None:
    for body, field in INVALID_KEY_REQUESTS:
        assert_invalid(server.call("POST", "/v1/keys", json=body), field)
    assert len(server.call("GET", "/v1/keys").json["items"]) == 3


def test_a_key_stops_working_at_its_expiry(server: Server) -> None:
    expires_at = (START + timedelta(hours=1)).isoformat()
    response = server.call(
        "POST", "/v1/keys", json={"name": "campaign", "role": "auditor", "expires_at": expires_at}
    )
    assert response.json["expires_at"] == expires_at
    secret = response.json["secret"]
    assert server.call("GET", "/v1/program", secret).status_code == 200
    server.clock.advance(timedelta(hours=1))
    body = assert_problem(server.call("GET", "/v1/program", secret), 401)
    assert "expired" in body["detail"]
    listed = server.call("GET", "/v1/keys").json["items"]
    assert [item["state"] for item in listed if item["name"] == "campaign"] == ["expired"]


def test_a_revoked_key_is_refused_and_revoking_again_answers_the_same(server: Server) -> None:
    storefront = key_of(server, "storefront")
    assert server.call("GET", "/v1/members/nobody", "storefront").status_code == 404
    server.clock.advance(timedelta(minutes=1))
    response = server.call("DELETE", f"/v1/keys/{storefront['key_id']}")
    assert response.status_code == 200
    assert response.json["revoked_at"] == (START + timedelta(minutes=1)).isoformat()
    assert response.json["state"] == "revoked"
    body = assert_problem(server.call("GET", "/v1/members/nobody", "storefront"), 401)
    assert "revoked" in body["detail"]
    server.clock.advance(timedelta(minutes=1))
    again = server.call("DELETE", f"/v1/keys/{storefront['key_id']}")
    assert again.status_code == 200
    assert again.json == response.json


def test_revoking_an_unknown_key_is_404_and_a_malformed_id_422(server: Server) -> None:
    body = assert_problem(server.call("DELETE", "/v1/keys/key_0123456789ab"), 404)
    assert body["type"] == "https://daifuku.dev/problems/unknown-key"
    assert_invalid(server.call("DELETE", "/v1/keys/cust-1001"), "key_id")


def test_the_last_admin_key_is_not_revoked_the_shop_would_lock_itself_out(server: Server) -> None:
    admin = key_of(server, "admin")
    body = assert_problem(server.call("DELETE", f"/v1/keys/{admin['key_id']}"), 409)
    assert body["type"] == "https://daifuku.dev/problems/last-admin-key"
    assert "lock itself out" in body["detail"]
    assert server.call("GET", "/v1/keys").status_code == 200
    other = server.call("POST", "/v1/keys", json={"name": "second admin", "role": "admin"})
    assert server.call("DELETE", f"/v1/keys/{admin['key_id']}").status_code == 200
    assert_problem(server.call("GET", "/v1/keys"), 401)
    second = other.json["secret"]
    body = assert_problem(server.call("DELETE", f"/v1/keys/{other.json['key_id']}", second), 409)
    assert "lock itself out" in body["detail"]


def test_the_caller_carries_its_keys_public_id(server: Server) -> None:
    admin = key_of(server, "admin")
    with server.app.test_request_context(headers=server.auth("admin")):
        caller = authenticate()
    assert (caller.key_id, caller.name, caller.role) == (admin["key_id"], "e2e admin", "admin")
    server.enrol("ann")
    with server.app.test_request_context(headers=server.auth(server.member_token("ann"))):
        g.request_id = "r"
        member = authenticate()
    assert (member.role, member.member_id, member.key_id) == ("member", "ann", None)


def test_revoking_a_members_tokens_refuses_those_issued_before(server: Server) -> None:
    server.enrol("ann")
    server.enrol("bob")
    old = server.member_token("ann")
    legacy = legacy_token(server, "ann", timedelta(hours=1))
    bobs = server.member_token("bob")
    assert server.call("GET", "/v1/members/ann", legacy).status_code == 200
    server.clock.advance(timedelta(seconds=1))
    response = server.call("POST", "/v1/members/ann/tokens/revocations", "storefront", {})
    assert response.status_code == 201
    assert response.json == {
        "member_id": "ann",
        "revoked_before": (START + timedelta(seconds=1)).isoformat(),
    }
    body = assert_problem(server.call("GET", "/v1/members/ann", old), 401)
    assert "revoked" in body["detail"]
    assert "invalid_token" in server.call("GET", "/v1/members/ann", old).headers["WWW-Authenticate"]
    assert_problem(server.call("GET", "/v1/members/ann", legacy), 401)
    assert server.call("GET", "/v1/members/bob", bobs).status_code == 200
    server.clock.advance(timedelta(milliseconds=1))
    fresh = server.member_token("ann")
    assert fresh.startswith("dmt2.")
    assert server.call("GET", "/v1/members/ann", fresh).status_code == 200


def test_revoking_the_tokens_of_an_unknown_member_is_404(server: Server) -> None:
    response = server.call("POST", "/v1/members/nobody/tokens/revocations", "storefront", {})
    body = assert_problem(response, 404)
    assert body["type"] == "https://daifuku.dev/problems/unknown-member"
    assert_invalid(
        server.call("POST", "/v1/members/ann/tokens/revocations", "storefront", {"x": 1}), "x"
    )


def test_the_openapi_document_describes_keys_and_revocations(server: Server) -> None:
    spec = server.client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]

    def schema(operation: dict[str, Any], status: str | None = None) -> dict[str, Any]:
        if status is None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        else:
            ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        found: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return found

    keys = spec["paths"]["/v1/keys"]
    assert set(schema(keys["post"])["required"]) == {"name", "role"}
    assert schema(keys["post"])["additionalProperties"] is False
    assert "secret" in schema(keys["post"], "201")["properties"]
    assert keys["get"]["x-roles"] == ["admin"]
    listed = schema(keys["get"], "200")["properties"]["items"]["items"]["$ref"]
    assert "secret" not in schemas[listed.rsplit("/", 1)[1]]["properties"]
    revoke = spec["paths"]["/v1/keys/{key_id}"]["delete"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(revoke["responses"])
    assert "revoked_at" in schema(revoke, "200")["properties"]
    (parameter,) = spec["paths"]["/v1/keys/{key_id}"]["parameters"]
    assert parameter["schema"]["pattern"] == "^key_[0-9a-f]{12}$"
    tokens = spec["paths"]["/v1/members/{member_id}/tokens/revocations"]["post"]
    assert schema(tokens)["additionalProperties"] is False
    assert set(schema(tokens, "201")["properties"]) == {"member_id", "revoked_before"}
    assert "storefront" in tokens["x-roles"]
