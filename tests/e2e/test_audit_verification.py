"""POST /v1/audit/verifications, `daifuku replay`, `daifuku project` and `daifuku audit verify`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.views import open_member_status_view
from api import representations
from api.cli import main
from tests.answers import answers
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import Server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def history(server: Server, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Server:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", database_url)
    server.enrol("ann")
    server.enrol("bob")
    server.purchase("A-1", "ann", "120.00")
    server.purchase("B-1", "bob", "600.00")
    return server


def test_an_auditor_is_told_when_the_read_model_was_never_built(history: Server) -> None:
    response = history.call("POST", "/v1/audit/verifications", "auditor")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["position"] is None and "never built" in body["live_view"]
    assert [(m["member_id"], m["field"], m["live"]) for m in body["mismatches"]] == [
        ("ann", "row", "missing in live view"),
        ("bob", "row", "missing in live view"),
        ("ann", "purchases.A-1", "missing in live view"),
        ("bob", "purchases.B-1", "missing in live view"),
    ]
    assert (body["members"], body["events"]) == (2, history.ledger.recorder.max_notification_id())


def test_after_a_replay_the_verification_finds_nothing(
    history: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay"]) == 0
    assert "Replayed" in capsys.readouterr().out
    response = history.call("POST", "/v1/audit/verifications", "auditor")
    assert response.status_code == 200
    assert response.json["mismatches"] == []
    assert response.json["position"] == history.ledger.recorder.max_notification_id()
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK:")


def test_only_auditors_and_admins_may_ask(history: Server) -> None:
    assert_problem(history.call("POST", "/v1/audit/verifications", "storefront"), 403)
    assert history.call("POST", "/v1/audit/verifications", "admin").status_code == 200


def test_the_project_command_follows_the_log_and_stops_on_a_signal(
    history: Server, database_url: str
) -> None:
    env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project", "--poll", "0.05"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    view = open_member_status_view(history.ledger.env)
    try:
        history.purchase("A-2", "ann", "30.00")  # recorded while the worker runs
        head = history.ledger.recorder.max_notification_id()
        deadline = time.monotonic() + 20
        while view.max_tracking_id(history.ledger.name) != head:
            assert time.monotonic() < deadline, "the worker did not catch up"
            assert worker.poll() is None, worker.communicate()[0]
            time.sleep(0.05)
        row = view.row("ann")
        assert row is not None
        found = representations.opened(row.status, history.ledger.sealer)
        assert found == answers(history.ledger).member_status("ann")
    finally:
        view.close()
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output
    assert f"Stopping at position {head}." in output
