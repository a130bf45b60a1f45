"""Two server processes on one database: what one revokes, the other refuses within a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.e2e.test_cli import ROOT

WITHIN_SECONDS = 1.0


@contextmanager
def serving(database_url: str, read_models: str = "ledger") -> Iterator[tuple[str, list[str]]]:
    """``daifuku serve`` on a free loopback port: its URL and what it printed before listening."""
    env = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": database_url,
        "DAIFUKU_READ_MODELS": read_models,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DAIFUKU_SECRET_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
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
        yield url, printed
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def call(url: str, credential: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def refused_within(url: str, credential: str, since: float) -> float:
    """Seconds from ``since`` until the server answers 401 to the credential."""
    while True:
        status, body = call(url, credential)
        if status == 401:
            return time.monotonic() - since
        assert status == 200, body
        assert time.monotonic() - since < WITHIN_SECONDS, "still accepted a second later"
        time.sleep(0.02)


def test_a_key_and_a_members_tokens_revoked_in_one_process_are_refused_by_another(
    postgres_url: str,
) -> None:
    with serving(postgres_url) as (one, printed), serving(postgres_url) as (other, _):
        (admin,) = [line.split()[-1] for line in printed if line.split()[0] == "admin"]
        status, leaked = call(
            f"{one}/v1/keys", admin, "POST", {"name": "leaked", "role": "storefront"}
        )
        assert status == 201, leaked
        secret = leaked["secret"]
        status, _ = call(
            f"{one}/v1/members", secret, "POST", {"member_id": "ann", "email": "a@b.cd"}
        )
        assert status == 201
        status, minted = call(f"{one}/v1/members/ann/tokens", secret, "POST", {})
        assert status == 201
        token = minted["token"]
        for _ in range(20):  # both caches hold the key and the member's (absent) revocation
            assert call(f"{other}/v1/members/ann", secret)[0] == 200
            assert call(f"{other}/v1/members/ann", token)[0] == 200

        since = time.monotonic()
        status, revoked = call(f"{one}/v1/members/ann/tokens/revocations", secret, "POST", {})
        assert status == 201, revoked
        token_seconds = refused_within(f"{other}/v1/members/ann", token, since)
        assert call(f"{other}/v1/members/ann", secret)[0] == 200

        since = time.monotonic()
        status, revoked = call(f"{one}/v1/keys/{leaked['key_id']}", admin, "DELETE")
        assert status == 200 and revoked["state"] == "revoked", revoked
        key_seconds = refused_within(f"{other}/v1/members/ann", secret, since)
        assert call(f"{one}/v1/members/ann", secret)[0] == 401
        print(f"refused by the other process after {token_seconds:.3f} s and {key_seconds:.3f} s")
