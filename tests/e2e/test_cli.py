"""The daifuku command: keys, the scheduler and the server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.keys import KeyStore
from adapters.settings import Settings
from api.app import create_app
from api.bootstrap import bootstrap
from api.cli import main
from domain.clock import FixedClock
from tests.e2e.conftest import START

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", database_url)
    monkeypatch.delenv("DAIFUKU_SECRET_KEY", raising=False)
    return database_url


def test_keys_create_prints_the_key_last_and_it_authenticates(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--role", "auditor", "--name", "ops team"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    key = lines[-1]
    assert key.startswith("dfk_") and " " not in key
    assert "auditor" in lines[0] and "ops team" in lines[0]

    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": environment})
    clock = FixedClock(START)
    ledger, keys, secret = bootstrap(settings, clock=clock)
    try:
        app = create_app(ledger, keys, token_secret=secret, clock=clock)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/program", headers=headers).status_code == 200
        assert client.put("/v1/program", json={}, headers=headers).status_code == 403
    finally:
        ledger.close()
        keys.close()


def test_keys_are_stored_hashed(environment: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "create", "--role", "storefront"])
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = KeyStore(Settings.from_environ({"DAIFUKU_DATABASE_URL": environment}).database)
    try:
        assert store.role_of(key) == ("storefront", "storefront")
        assert store.role_of(key + "x") is None
        stored = store._db.run("SELECT key_hash FROM daifuku_api_keys")
        assert all(key not in str(row) for row in stored)
    finally:
        store.close()


def test_keys_create_refuses_an_unknown_role(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--role", "member"])
    assert exit_.value.code == 2


def test_keys_list_shows_every_key_and_never_a_secret(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--role", "admin", "--name", "owner"]) == 0
    assert main(["keys", "create", "--role", "auditor", "--expires-in-days", "30"]) == 0
    until = "2099-01-01T09:00:00+09:00"
    assert main(["keys", "create", "--role", "storefront", "--expires-at", until]) == 0
    secrets = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dfk_")]
    assert main(["keys", "list"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    columns = ["id", "name", "role", "state", "created", "last used", "expires", "revoked"]
    assert re.split(r"\s{2,}", header) == columns
    assert [row.split()[1:4] for row in rows] == [
        ["owner", "admin", "active"],
        ["auditor", "auditor", "active"],
        ["storefront", "storefront", "active"],
    ]
    assert "2099-01-01 00:00:00Z" in rows[2]
    assert all(secret not in "\n".join(rows) for secret in secrets)
    assert all(re.match(r"^key_[0-9a-f]{12} ", row) for row in rows)


def test_keys_revoke_and_rotate_say_what_they_did_and_refuse_unknown_ids(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "create", "--role", "admin"])
    main(["keys", "create", "--role", "storefront", "--name", "web shop"])
    capsys.readouterr()
    store = KeyStore(Settings.from_environ({"DAIFUKU_DATABASE_URL": environment}).database)
    try:
        admin, storefront = store.page()
        assert main(["keys", "revoke", storefront.key_id]) == 0
        assert f"Revoked storefront key 'web shop' ({storefront.key_id})" in capsys.readouterr().out
        assert main(["keys", "revoke", "key_0123456789ab"]) == 1
        assert "key_0123456789ab" in capsys.readouterr().err
        assert main(["keys", "revoke", admin.key_id]) == 1
        assert "lock itself out" in capsys.readouterr().err
        assert main(["keys", "rotate", admin.key_id]) == 0
        printed = capsys.readouterr().out.strip().splitlines()
        assert f"{admin.key_id} is revoked" in printed[0] and "shown once" in printed[0]
        secret = printed[-1]
        assert store.role_of(secret) == ("admin", "admin")
        assert store.get(admin.key_id).revoked_at is not None
        assert main(["keys", "rotate", admin.key_id]) == 1
        assert "revoked" in capsys.readouterr().err
        assert main(["keys", "rotate", "key_0123456789ab"]) == 1
    finally:
        store.close()


def test_scheduler_once_records_what_is_due(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scheduler", "--once"]) == 0
    assert capsys.readouterr().out.strip() == "Recorded 0 time-driven events."


def test_followups_once_starts_what_the_plans_call_for_then_nothing_twice(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": environment})
    ledger, keys, _ = bootstrap(settings)
    try:
        ledger.enrol("ann", "ann@example.com", None, "t")
        ledger.record_purchase("A-1", "ann", Decimal("12.00"), "USD", None, [], None, "t")
        head = ledger.recorder.max_notification_id()
    finally:
        ledger.close()
        keys.close()
    assert main(["followups", "--once"]) == 0
    printed = capsys.readouterr().out.strip()
    # Enrolled: prospect; first purchase: thank-you (which stops prospect); the only buyer is
    # class A: a-class. Its starts are read back too, so the position passes the head.
    assert printed.startswith("Read ") and "from position 0 to " in printed, printed
    assert printed.endswith("started 3 follow-ups."), printed
    ledger, keys, _ = bootstrap(settings)
    try:
        plans = sorted(f.plan for f in ledger.member_copy("ann").followups.by_id.values())
        assert plans == ["a-class", "prospect", "thank-you"]
        assert (ledger.recorder.max_notification_id() or 0) > (head or 0)
    finally:
        ledger.close()
        keys.close()
    assert main(["followups", "--once"]) == 0
    again = capsys.readouterr().out.strip()
    assert again.startswith("Read 0 events") and again.endswith("started 0 follow-ups."), again


def test_serve_answers_and_stops_on_sigterm(sqlite_url: str) -> None:
    env = {**os.environ, "DAIFUKU_DATABASE_URL": sqlite_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line.strip())
            if line.startswith("Listening on "):
                break
        url = printed[-1].split()[2]
        assert url.startswith("http://127.0.0.1:"), printed
        keys = {
            line.split()[0]: line.split()[-1]
            for line in printed
            if line.split()[-1].startswith("dfk_")
        }
        assert list(keys) == ["storefront", "auditor", "admin"]
        assert any("SQLite file" in line for line in printed)
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert response.status == 200
            assert "read_models" in json.load(response)

        def call(path: str, body: Any = None) -> tuple[Any, Any]:
            request = urllib.request.Request(
                f"{url}{path}",
                data=None if body is None else json.dumps(body).encode(),
                headers={
                    "Authorization": f"Bearer {keys['storefront']}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers, json.load(response)

        call("/v1/members", {"member_id": "ann", "email": "ann@example.com"})
        order = {"order_id": "A-1", "member_id": "ann", "amount": "12.00", "currency": "USD"}
        _, bought = call("/v1/purchases", order)
        # The embedded worker brings the views to the purchase: they answer, and include it
        # (once they have applied what the follow-up process and scheduler wrote after it).
        deadline = time.monotonic() + 30
        while True:
            headers, status = call(f"/v1/members/ann?after={bought['position']}")
            if headers["Daifuku-Read-From"] == "view" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert headers["Daifuku-Read-From"] == "view"
        assert status["points"]["pending"] == 12
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
