"""POST /v1/audit/verifications as a job, `daifuku replay`, `daifuku project` and
`daifuku audit verify`.

The server here is the one ``build_app`` composes (the jobs' table in the store itself). A
verification that must be seen running is held by a stand-in wrapped around the real one: it
stops after its first progress report until the test lets it go, so no step depends on timing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.keys import KEY_ROLES
from adapters.projections import MemberStatusProjection, ProgressReport, ProjectionWorker, Shapes
from adapters.settings import Database, Settings
from adapters.sidetables import connect
from adapters.verification import Verification, verify_member_status
from adapters.verification_jobs import INSERT, STALE_AFTER, VerificationJobs
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.bootstrap import build_app, close_app
from api.cli import main
from api.context import EXTENSION, Backend
from domain.clock import FixedClock
from domain.ledger import Ledger
from tests.answers import answers
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import START, Server

ROOT = Path(__file__).resolve().parents[2]
VERIFICATIONS = "/v1/audit/verifications"
# Another worker process of the same server: the app as build_app composes it, on the test's
# clock; it asks for a verification and prints the job's id and whether it started it.
OTHER_PROCESS = """
import sys, threading
from adapters.settings import Settings
from api.bootstrap import build_app
from api.context import EXTENSION
from domain.clock import FixedClock
from tests.e2e.conftest import START
app, _, _ = build_app(Settings.from_environ(), FixedClock(START))
jobs = app.extensions[EXTENSION].verifications
if sys.argv[1] == "hang":  # its job never ends: the process is killed while it runs
    jobs.verify = lambda *args: threading.Event().wait() or None
job, started = jobs.start()
print(job.id, started, flush=True)
if sys.argv[1] == "hang":
    threading.Event().wait()
"""


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    """The production composition: build_app, its jobs kept in the store."""
    clock = FixedClock(START)
    app, ledger, keys = build_app(
        Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url}), clock
    )
    try:
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        secret = backend(app).token_secret
        yield Server(app, app.test_client(), clock, ledger, keys, secret, api_keys)
    finally:
        close_app(app)


@pytest.fixture
def history(server: Server, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Server:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", database_url)
    server.enrol("ann")
    server.enrol("bob")
    server.purchase("A-1", "ann", "120.00")
    server.purchase("B-1", "bob", "600.00")
    return server


class Held:
    """The real verification, held after its first progress report until ``release``."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(
        self,
        ledger: Ledger,
        live: MemberStatusView,
        shapes: Shapes,
        progress: ProgressReport,
        stop: threading.Event,
    ) -> Verification:
        def report(done: int, total: int, seconds: float) -> None:
            progress(done, total, seconds)
            self.reached.set()
            self.release.wait(60)

        return verify_member_status(ledger, live, shapes, report, stop)


@pytest.fixture
def held(history: Server) -> Iterator[Held]:
    stand_in = Held()
    jobs(history).verify = stand_in
    yield stand_in
    stand_in.release.set()


def backend(app: Any) -> Backend:
    found: Backend = app.extensions[EXTENSION]
    return found


def jobs(server: Server) -> VerificationJobs:
    return backend(server.app).verifications


def start(server: Server, as_: str = "auditor") -> dict[str, Any]:
    response = server.call("POST", VERIFICATIONS, as_)
    assert response.status_code == 202, response.json
    body: dict[str, Any] = response.json
    assert response.headers["Location"] == f"{VERIFICATIONS}/{body['id']}"
    assert set(body) == {"id", "status", "progress"}, body
    return body


def look(server: Server, job_id: str) -> dict[str, Any]:
    response = server.call("GET", f"{VERIFICATIONS}/{job_id}", "auditor")
    assert response.status_code == 200, response.json
    found: dict[str, Any] = response.json
    return found


def finished(server: Server, job_id: str) -> dict[str, Any]:
    jobs(server).wait(job_id, timeout=60)  # joins the job's thread
    body = look(server, job_id)
    assert body["status"] == "done", body
    return body


def other_process(database_url: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def change_live_version(database_url: str, member_id: str, version: int) -> None:
    """Someone changes a row of the live view behind the projection's back."""
    database = Database.from_url(database_url)
    statement = "UPDATE member_status SET version = {} WHERE member_id = {}"
    if database.kind == "sqlite":
        with sqlite3.connect(database.path) as conn:
            found = conn.execute(statement.format("?", "?"), (version, member_id)).rowcount
    else:
        with psycopg.connect(database_url) as pg:
            found = pg.execute(statement.format("%s", "%s"), (version, member_id)).rowcount
    assert found == 1


def test_an_auditor_is_told_when_the_read_model_was_never_built(history: Server) -> None:
    started = start(history)
    assert started["status"] == "running"
    assert started["progress"]["started_at"] == START.isoformat()
    body = finished(history, started["id"])
    head = history.ledger.recorder.max_notification_id()
    assert body["position"] is None and "never built" in body["live_view"]
    assert [(m["member_id"], m["field"], m["live"]) for m in body["mismatches"]] == [
        ("ann", "row", "missing in live view"),
        ("bob", "row", "missing in live view"),
        ("ann", "purchases.A-1", "missing in live view"),
        ("bob", "purchases.B-1", "missing in live view"),
    ]
    assert (body["members"], body["events"]) == (2, head)
    progress = body["progress"]
    assert (progress["events_done"], progress["events_total"]) == (head, head)
    assert progress["finished_at"] == START.isoformat() and progress["rate_per_second"] > 0


def test_after_a_replay_the_verification_finds_nothing(
    history: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay"]) == 0
    assert "Replayed" in capsys.readouterr().out
    head = history.ledger.recorder.max_notification_id()
    body = finished(history, start(history)["id"])
    assert (body["mismatches"], body["position"]) == ([], head)
    assert main(["audit", "verify"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK:"), out
    assert f"verify: {head}/{head} events" in err, err  # the progress line of a non-terminal


def test_a_row_changed_behind_the_views_back_is_named(
    history: Server, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay"]) == 0
    replayed = open_member_status_view(history.ledger.env)
    try:
        row = replayed.row("ann")
        assert row is not None
    finally:
        replayed.close()
    change_live_version(database_url, "ann", 99)
    body = finished(history, start(history)["id"])
    assert body["mismatches"] == [
        {"member_id": "ann", "field": "version", "live": 99, "replayed": row.version}
    ]
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH ann version: live 99, replayed {row.version}" in out
    assert "1 mismatches" in out


def test_a_running_verification_shows_its_progress_and_is_the_one_a_second_start_gets(
    history: Server, held: Held, database_url: str
) -> None:
    head = history.ledger.recorder.max_notification_id()
    job_id = start(history)["id"]
    assert held.reached.wait(60)
    running = look(history, job_id)
    assert running["status"] == "running", running
    assert (running["progress"]["events_done"], running["progress"]["events_total"]) == (
        head,
        head,
    )
    assert running["progress"]["finished_at"] is None and "mismatches" not in running
    assert start(history)["id"] == job_id
    other = other_process(database_url, "ask")  # another worker process of the server
    output, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and output.split() == [job_id, "False"], output
    # Beside it, live traffic writes: the ledger, and the projection into the live view.
    history.purchase("A-2", "ann", "30.00")
    view = open_member_status_view(history.ledger.env)
    try:
        worker = ProjectionWorker(
            history.ledger, MemberStatusProjection(view, history.ledger, representations)
        )
        assert worker.catch_up() == history.ledger.recorder.max_notification_id()
    finally:
        view.close()
    held.release.set()
    done = finished(history, job_id)
    assert done["events"] == head  # the history as it was when the job began
    assert start(history)["id"] != job_id  # it has finished: a new start is a new job


def test_a_verification_whose_process_died_is_interrupted_and_a_new_start_replaces_it(
    history: Server, database_url: str
) -> None:
    hanging = other_process(database_url, "hang")
    try:
        assert hanging.stdout is not None
        job_id, started_there = hanging.stdout.readline().split()
        assert started_there == "True"
        assert look(history, job_id)["status"] == "running"
        assert start(history)["id"] == job_id  # its process is alive: it is the running one
    finally:
        hanging.send_signal(signal.SIGKILL)
        hanging.wait(timeout=60)
    interrupted = look(history, job_id)
    assert interrupted["status"] == "interrupted", interrupted
    assert f":{hanging.pid}) is gone" in interrupted["error"]
    replacing = start(history)
    assert replacing["id"] != job_id and replacing["status"] == "running"
    assert look(history, job_id)["status"] == "interrupted"
    assert (
        finished(history, replacing["id"])["events"]
        == history.ledger.recorder.max_notification_id()
    )


def test_a_verification_without_a_heartbeat_is_interrupted(
    history: Server, database_url: str
) -> None:
    elsewhere = connect(Database.from_url(database_url))
    try:
        at = START.isoformat()
        elsewhere.run(INSERT, ("00000000-0000-4000-8000-000000000001", "elsewhere:42", at, at))
    finally:
        elsewhere.close()
    job_id = "00000000-0000-4000-8000-000000000001"
    assert look(history, job_id)["status"] == "running"
    assert start(history)["id"] == job_id  # another host's job, beating until just now
    history.clock.advance(STALE_AFTER + timedelta(seconds=1))
    interrupted = look(history, job_id)
    assert interrupted["status"] == "interrupted"
    assert interrupted["error"] == "no heartbeat from elsewhere:42 for 61 s"
    assert interrupted["progress"]["finished_at"] == START.isoformat()  # its last heartbeat
    assert start(history)["id"] != job_id


def test_a_server_that_stops_leaves_its_verification_interrupted(
    history: Server, database_url: str
) -> None:
    """Another worker process of the same server, stopped while its job runs."""
    worker = VerificationJobs.on_database(
        Database.from_url(database_url), history.ledger, representations, history.clock
    )
    reached = threading.Event()

    def until_stopped(
        ledger: Ledger,
        live: MemberStatusView,
        shapes: Shapes,
        progress: ProgressReport,
        stop: threading.Event,
    ) -> Verification:
        def report(done: int, total: int, seconds: float) -> None:
            progress(done, total, seconds)
            reached.set()
            stop.wait(60)

        return verify_member_status(ledger, live, shapes, report, stop)

    worker.verify = until_stopped
    job, started_here = worker.start()
    assert started_here and reached.wait(60)
    worker.close()
    stopped = look(history, job.id)
    assert stopped["status"] == "interrupted", stopped
    assert stopped["error"].startswith("the server stopped while it ran")
    assert start(history)["id"] != job.id


def test_only_auditors_and_admins_may_ask(history: Server) -> None:
    token = history.member_token("ann")
    job_id = start(history, "admin")["id"]  # an admin may do anything
    for caller in ("storefront", token):
        assert_problem(history.call("POST", VERIFICATIONS, caller), 403)
        assert_problem(history.call("GET", f"{VERIFICATIONS}/{job_id}", caller), 403)
    assert finished(history, job_id)["events"] == history.ledger.recorder.max_notification_id()
    assert history.call("GET", f"{VERIFICATIONS}/{job_id}", "admin").status_code == 200


@pytest.mark.parametrize(
    ("job_id", "detail"),
    [
        ("00000000-0000-4000-8000-00000000abcd", "no verification has the id"),
        ("not-a-job", "ids are lowercase UUIDs"),
        ("00000000-0000-4000-8000-00000000ABCD", "ids are lowercase UUIDs"),
    ],
)
def test_an_unknown_or_malformed_id_is_not_found(history: Server, job_id: str, detail: str) -> None:
    response = history.call("GET", f"{VERIFICATIONS}/{job_id}", "auditor")
    assert_problem(response, 404)
    assert response.json["type"].endswith("/unknown-verification")
    assert detail in response.json["detail"]


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
