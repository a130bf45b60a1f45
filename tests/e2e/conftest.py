"""An HTTP client on the real app and ledger (SQLite, PostgreSQL), a fixed clock, keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from adapters.keys import KEY_ROLES, KeyStore
from adapters.settings import Settings
from api.app import create_app
from api.bootstrap import bootstrap
from domain.clock import FixedClock
from domain.ledger import Ledger

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@dataclass
class Server:
    app: Flask
    client: FlaskClient
    clock: FixedClock
    ledger: Ledger
    keys: KeyStore
    secret: bytes
    api_keys: dict[str, str]

    def auth(self, role_or_token: str) -> dict[str, str]:
        """Headers for a role's API key, or for a member token given as is."""
        credential = self.api_keys.get(role_or_token, role_or_token)
        return {"Authorization": f"Bearer {credential}"}

    def call(
        self, method: str, path: str, as_: str = "admin", json: Any = None, **kwargs: Any
    ) -> TestResponse:
        headers = {**self.auth(as_), **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, json=json, headers=headers, **kwargs)

    def enrol(self, member_id: str, email: str | None = None) -> dict[str, Any]:
        body = {"member_id": member_id, "email": email or f"{member_id}@example.com"}
        response = self.call("POST", "/v1/members", "storefront", body)
        assert response.status_code == 201, response.json
        return dict(response.json or {})

    def purchase(self, order_id: str, member_id: str, amount: str = "120.00") -> dict[str, Any]:
        body = {"order_id": order_id, "member_id": member_id, "amount": amount, "currency": "USD"}
        response = self.call("POST", "/v1/purchases", "storefront", body)
        assert response.status_code == 201, response.json
        return dict(response.json or {})

    def member_token(self, member_id: str, ttl_seconds: int | None = None) -> str:
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        response = self.call("POST", f"/v1/members/{member_id}/tokens", "storefront", body)
        assert response.status_code == 201, response.json
        return str(response.json["token"])


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    try:
        app = create_app(
            ledger,
            keys,
            token_secret=secret,
            clock=clock,
            token_ttl_seconds=settings.token_ttl_seconds,
        )
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        yield Server(app, app.test_client(), clock, ledger, keys, secret, api_keys)
    finally:
        ledger.close()
        keys.close()
