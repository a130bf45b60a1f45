"""SIGKILL the production server and the projection worker mid-load; nothing acknowledged is lost
and nothing retried is doubled.

On PostgreSQL, as in production: ``gunicorn api.wsgi:app`` (2 gthread workers) and
``daifuku project``, each in a session of its own on 127.0.0.1. Client threads enrol members and
record their purchases, noting which requests were acknowledged (2xx) and which got no answer.
Once enough are acknowledged, both process groups get SIGKILL at once; both are restarted. Then
every acknowledged write is read back (the member, the purchase and its points), every
unanswered request is retried with the same body and must answer as a create (201) or a repeat
(200), every acknowledged purchase sent again is a repeat with the same points, the log holds
exactly one enrolment per member and one purchase per order, and each member's points are the
sum of its purchases' once the restarted worker has caught up. ~15 s.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.settings import Settings
from adapters.views import open_member_status_view
from api.bootstrap import bootstrap
from devtools.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLIENTS = 4
ACKNOWLEDGED_BEFORE_KILL = 60
LOAD_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0

pytestmark = pytest.mark.postgres


@dataclass
class Sent:
    """One write request and what became of it: its answer, or None for no answer."""

    path: str
    body: dict[str, Any]
    status: int | None = None
    answer: dict[str, Any] | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Processes:
    """The server and the worker, each in a session of its own (so SIGKILL reaches them all)."""

    env: dict[str, str]
    logs: Path
    port: int = 0  # gunicorn's, on 127.0.0.1
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    starts: int = 0

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}-{self.starts}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(process)
        return process

    def start(self) -> None:
        """gunicorn on a free port (another one if that was taken meanwhile), then the worker."""
        self.starts += 1
        for _attempt in range(3):
            self.port = free_port()
            gunicorn = [
                str(BIN / "gunicorn"),
                "--workers", "2",
                "--threads", "4",
                "--worker-class", "gthread",
                "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning",
                "api.wsgi:app",
            ]  # fmt: skip
            server = self.spawn("gunicorn", gunicorn)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and server.poll() is None:
                with contextlib.suppress(OSError):
                    if request(self.port, "GET", "/healthz")[0] == 200:
                        self.spawn("project", [str(BIN / "daifuku"), "project"])
                        return
                time.sleep(0.1)
            self.stop()
        pytest.fail(f"gunicorn never answered /healthz: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to every process of both sessions at once, as a power cut would."""
        for process in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.running:
            process.wait(timeout=10)
        self.running.clear()

    def stop(self) -> None:
        for process in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.running.clear()

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def request(
    port: int, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    """One request on a connection of its own; OSError and http.client errors when unanswered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.strip() else None
    finally:
        connection.close()


@pytest.fixture
def stack(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Processes, dict[str, str]]]:
    env = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": postgres_url,
        "DAIFUKU_READ_MODELS": "views",
        "PYTHONUNBUFFERED": "1",
    }
    # Tables and keys first: two workers creating them at once on an empty database can race.
    ledger, keys, _ = bootstrap(Settings.from_environ(env))
    try:
        open_member_status_view(ledger.env).close()
        roles = {role: keys.create(role, f"crash {role}") for role in ("storefront", "admin")}
    finally:
        ledger.close()
        keys.close()
    processes = Processes(env=env, logs=tmp_path)
    try:
        yield processes, roles
    finally:
        processes.stop()


def write_load(port: int, key: str, client: int, sent: list[Sent], stop: threading.Event) -> None:
    """Enrol members one after another, each followed by two purchases, until no answer."""

    def send(path: str, body: dict[str, Any]) -> Sent:
        entry = Sent(path, body)
        sent.append(entry)
        with contextlib.suppress(OSError, http.client.HTTPException):  # no answer: it is gone
            entry.status, entry.answer = request(port, "POST", path, body, key)
        return entry

    number = 0
    while not stop.is_set():
        member = f"crash-{client}-{number}"
        enrolment = send("/v1/members", {"member_id": member, "email": f"{member}@example.com"})
        if not enrolment.acknowledged:
            return
        for line, amount in ((1, "120.00"), (2, f"{7 + client}.{number % 100:02d}")):
            body = {"order_id": f"{member}-{line}", "member_id": member, "amount": amount}
            if not send("/v1/purchases", {**body, "currency": "USD"}).acknowledged:
                return
        number += 1


def caught_up(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, health = request(port, "GET", "/healthz")
        if status == 200 and health["read_models"]["behind"] == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"the restarted projection worker did not catch up: {health}")


def whole_log(port: int, key: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        status, page = request(port, "GET", f"/v1/events?limit=1000&after={after}", key=key)
        assert status == 200, page
        events.extend(page["items"])
        after = page["next"]
    return events


def test_a_crash_loses_no_acknowledged_write_and_a_retry_doubles_none(
    stack: tuple[Processes, dict[str, str]],
) -> None:
    processes, keys = stack
    storefront, admin = keys["storefront"], keys["admin"]
    processes.start()
    sent: list[Sent] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=write_load, args=(processes.port, storefront, n, sent, stop))
        for n in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + LOAD_TIMEOUT
    while sum(s.acknowledged for s in list(sent)) < ACKNOWLEDGED_BEFORE_KILL:
        assert time.monotonic() < deadline, f"too few writes answered: {processes.log_tail()}"
        time.sleep(0.01)
    processes.kill()  # mid-load: every client has a request on its way or about to be
    stop.set()
    for thread in clients:
        thread.join(timeout=REQUEST_TIMEOUT + 5)
    acknowledged = [s for s in sent if s.acknowledged]
    unanswered = [s for s in sent if s.status is None]
    answered_otherwise = [s for s in sent if s.status is not None and not s.acknowledged]
    assert not answered_otherwise, [
        (s.path, s.body, s.status, s.answer) for s in answered_otherwise
    ]
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL
    assert unanswered, "the kill came between requests: nothing was left unanswered"
    print(f"crash: {len(acknowledged)} writes acknowledged, {len(unanswered)} unanswered")

    processes.start()
    port = processes.port
    caught_up(port)
    purchases: dict[str, dict[str, Any]] = {}
    for write in acknowledged:
        if write.path == "/v1/members":
            member = write.body["member_id"]
            status, found = request(port, "GET", f"/v1/members/{member}", key=storefront)
            assert status == 200 and found["email"] == write.body["email"], (write.body, found)
        else:
            order = write.body["order_id"]
            status, found = request(port, "GET", f"/v1/purchases/{order}", key=storefront)
            assert status == 200, (write.body, found)
            for name in ("member_id", "amount", "points_awarded", "bonus_points"):
                assert found[name] == write.answer[name], (name, write.answer, found)  # type: ignore[index]
            purchases[order] = found

    for write in unanswered:
        status, answer = request(port, "POST", write.path, write.body, storefront)
        assert status in (200, 201), (write.body, status, answer)  # a repeat or a create
        if write.path == "/v1/purchases":
            purchases[write.body["order_id"]] = answer
    for write in acknowledged:
        if write.path == "/v1/purchases":
            status, answer = request(port, "POST", write.path, write.body, storefront)
            assert status == 200, (write.body, status, answer)  # a repeat, never a second one
            assert answer["points_awarded"] == write.answer["points_awarded"]  # type: ignore[index]

    events = whole_log(port, admin)
    enrolled = Counter(e["member_id"] for e in events if e["type"] == "Enrolled")
    bought = Counter(e["data"]["order_id"] for e in events if e["type"] == "PurchaseRecorded")
    members = {s.body["member_id"] for s in acknowledged + unanswered}
    assert set(enrolled) == members and set(enrolled.values()) == {1}, enrolled
    assert set(bought) == set(purchases) and set(bought.values()) == {1}, bought

    caught_up(port)
    for member in members:
        mine = [p for p in purchases.values() if p["member_id"] == member]
        status, found = request(port, "GET", f"/v1/members/{member}", key=storefront)
        assert status == 200, found
        earned = sum(p["points_awarded"] + p["bonus_points"] for p in mine)
        assert found["points"]["lifetime_earned"] == found["points"]["pending"] == earned, (
            member,
            mine,
            found["points"],
        )
        assert len(found["points"]["pending_lots"]) == len(mine)
