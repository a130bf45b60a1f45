"""Scenarios of features/credentials.feature: keys listed, revoked and rotated; member tokens
revoked.

The "second server process" is a second app with its own ledger and key store (and so its own
caches) on the scenario's database, as another worker has them; rotating is the command line's
``daifuku keys rotate``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_bdd import given, scenarios, then, when
from werkzeug.test import TestResponse

from adapters.settings import Settings
from api.app import create_app
from api.bootstrap import bootstrap
from api.cli import main
from tests.bdd.conftest import World, step

scenarios("credentials.feature")

NEVER_ISSUED = "key_0123456789ab"
WITHIN_SECONDS = 1.0


@dataclass
class Credentials:
    """What a scenario keeps between its steps; the second process is closed at its end."""

    world: World
    database_url: str
    key_ids: dict[str, str] = field(default_factory=dict)
    second: FlaskClient | None = None
    first_revocation: TestResponse | None = None
    closing: list[Any] = field(default_factory=list)

    def as_holder(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.api_keys[name]}"}

    def listed(self) -> list[dict[str, Any]]:
        response = self.world.call("GET", "/v1/keys?limit=1000", "admin")
        assert response.status_code == 200, response.json
        items: list[dict[str, Any]] = response.json["items"]
        return items


@pytest.fixture
def credentials(world: World, database_url: str) -> Iterator[Credentials]:
    found = Credentials(world, database_url)
    yield found
    for closeable in found.closing:
        closeable.close()


def create_key(credentials: Credentials, role: str, name: str, expires_at: Any = None) -> None:
    body = {"name": name, "role": role} | ({"expires_at": expires_at} if expires_at else {})
    response = credentials.world.call("POST", "/v1/keys", "admin", body)
    assert response.status_code == 201, response.json
    assert "secret" in response.json
    credentials.world.api_keys[name] = response.json["secret"]
    credentials.key_ids[name] = response.json["key_id"]


@given(step('the admin created a {role} key "{name:q}"'))
@given(step('the admin created an {role} key "{name:q}"'))
def admin_created_key(credentials: Credentials, role: str, name: str) -> None:
    create_key(credentials, role, name)


@given(step('the admin created an {role} key "{name:q}" that expires in {days:d} days'))
def admin_created_expiring_key(credentials: Credentials, role: str, name: str, days: int) -> None:
    expires_at = (credentials.world.clock.now() + timedelta(days=days)).isoformat()
    create_key(credentials, role, name, expires_at)


@given(step("a second server process on the same database"))
def second_server_process(credentials: Credentials) -> None:
    world = credentials.world
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": credentials.database_url})
    ledger, keys, secret = bootstrap(settings, clock=world.clock)
    credentials.closing += [ledger, keys]
    app = create_app(ledger, keys, token_secret=secret, clock=world.clock)
    credentials.second = app.test_client()


def read_status(
    credentials: Credentials, name: str, member_id: str, client: FlaskClient | None = None
) -> TestResponse:
    return (client or credentials.world.client).get(
        f"/v1/members/{member_id}", headers=credentials.as_holder(name)
    )


@given(step('the holder of the key "{name:q}" reads the status of "{member_id:q}"'))
@then(step('the holder of the key "{name:q}" may read the status of "{member_id:q}"'))
def holder_reads_status(credentials: Credentials, name: str, member_id: str) -> None:
    response = read_status(credentials, name, member_id)
    assert response.status_code == 200, response.json


@given(
    step(
        'the holder of the key "{name:q}" reads the status of "{member_id:q}" from the second '
        "server process"
    )
)
def holder_reads_status_from_second(credentials: Credentials, name: str, member_id: str) -> None:
    response = read_status(credentials, name, member_id, credentials.second)
    assert response.status_code == 200, response.json


@then(step('the holder of the new key "{name:q}" may read the status of "{member_id:q}"'))
def new_holder_reads_status(credentials: Credentials, name: str, member_id: str) -> None:
    holder_reads_status(credentials, f"new {name}", member_id)


@then(step('the holder of the key "{name:q}" is refused'))
def holder_is_refused(credentials: Credentials, name: str) -> None:
    response = credentials.world.client.get("/v1/program", headers=credentials.as_holder(name))
    assert response.status_code == 401, response.json


def refused_within_a_second(client: FlaskClient | None, headers: dict[str, str]) -> None:
    assert client is not None, "no second server process was started"
    since = time.monotonic()
    while (status := client.get("/v1/program", headers=headers).status_code) != 401:
        assert status == 200
        assert time.monotonic() - since < WITHIN_SECONDS, "still accepted a second later"
        time.sleep(0.02)


@then(step('the second server process refuses the key "{name:q}" within a second'))
def second_refuses_key(credentials: Credentials, name: str) -> None:
    refused_within_a_second(credentials.second, credentials.as_holder(name))


def member_token_headers(credentials: Credentials, member_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credentials.world.tokens[member_id].value}"}


@given(step('the second server process accepts the member token of "{member_id:q}"'))
def second_accepts_member_token(credentials: Credentials, member_id: str) -> None:
    assert credentials.second is not None
    response = credentials.second.get(
        f"/v1/members/{member_id}", headers=member_token_headers(credentials, member_id)
    )
    assert response.status_code == 200, response.json


@then(step('the second server process refuses the member token of "{member_id:q}" within a second'))
def second_refuses_member_token(credentials: Credentials, member_id: str) -> None:
    refused_within_a_second(credentials.second, member_token_headers(credentials, member_id))


@when("the admin lists the keys")
def admin_lists_keys(credentials: Credentials) -> None:
    credentials.world.call("GET", "/v1/keys", "admin")


@then(step('the list shows "{name:q}" as a {state} {role} key'))
@then(step('the list shows "{name:q}" as an {state} {role} key'))
def list_shows(credentials: Credentials, name: str, state: str, role: str) -> None:
    found = [(item["state"], item["role"]) for item in credentials.listed() if item["name"] == name]
    assert (state, role) in found, found


@then(step('the list shows "{name:q}" last used at {moment:instant}'))
def list_shows_last_use(credentials: Credentials, name: str, moment: datetime) -> None:
    (item,) = [item for item in credentials.listed() if item["name"] == name]
    assert item["last_used_at"] == moment.isoformat(), item


@then("the list shows no secret")
def list_shows_no_secret(credentials: Credentials) -> None:
    text = credentials.world.response.get_data(as_text=True) if credentials.world.response else ""
    assert text and "dfk_" not in text and '"secret"' not in text
    assert all(secret not in text for secret in credentials.world.api_keys.values())


def revoke(credentials: Credentials, key_id: str) -> TestResponse:
    return credentials.world.call("DELETE", f"/v1/keys/{key_id}", "admin")


@given(step('the admin revoked the key "{name:q}"'))
def admin_revoked(credentials: Credentials, name: str) -> None:
    response = revoke(credentials, credentials.key_ids[name])
    assert response.status_code == 200, response.json
    credentials.first_revocation = response


@when(step('the admin revokes the key "{name:q}"'))
def admin_revokes(credentials: Credentials, name: str) -> None:
    revoke(credentials, credentials.key_ids[name])


@when("the admin revokes a key that was never issued")
def admin_revokes_unknown(credentials: Credentials) -> None:
    revoke(credentials, NEVER_ISSUED)


@when("the admin revokes its own key")
def admin_revokes_own_key(credentials: Credentials) -> None:
    (own,) = [item for item in credentials.listed() if item["name"] == "bdd admin"]
    revoke(credentials, own["key_id"])


@then("the response is the same as the first revocation")
def same_as_first_revocation(credentials: Credentials) -> None:
    assert credentials.first_revocation is not None
    assert credentials.world.body() == credentials.first_revocation.get_json()


@then(step('the problem says "{text:q}"'))
def problem_says(credentials: Credentials, text: str) -> None:
    assert text in credentials.world.body()["detail"], credentials.world.body()


@then("the admin can still list the keys")
def admin_still_lists(credentials: Credentials) -> None:
    assert credentials.listed()


@when(step('the operator rotates the key "{name:q}"'))
def operator_rotates(
    credentials: Credentials,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", credentials.database_url)
    capsys.readouterr()
    assert main(["keys", "rotate", credentials.key_ids[name]]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert "revoked" in printed[0] and "shown once" in printed[0], printed
    credentials.world.api_keys[f"new {name}"] = printed[-1]


@when(step('the storefront revokes the member tokens of "{member_id:q}"'))
def storefront_revokes_tokens(credentials: Credentials, member_id: str) -> None:
    credentials.world.call("POST", f"/v1/members/{member_id}/tokens/revocations", "storefront", {})


@when(step('the storefront mints a new member token for "{member_id:q}"'))
def storefront_mints_new_token(credentials: Credentials, member_id: str) -> None:
    credentials.world.member_token(member_id, ttl_seconds=3600)
