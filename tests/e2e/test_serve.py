"""``daifuku serve`` as a new user starts it: gunicorn, the background work once, request logs,
a graceful stop; and ``--dev``, werkzeug's development server."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from adapters.settings import Settings
from api import server as daifuku_server
from api.logs import REQUEST_LOGGER, JsonFormatter
from api.server import cpu_count
from tests.e2e.conftest import Server
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 90  # a bound on waiting, not a measure: a loaded 2-core machine is slow
KEY = re.compile(r"dfk_[A-Za-z0-9_-]+|dmt2\.[A-Za-z0-9._-]+")


@dataclass
class Served:
    """A ``daifuku serve`` process in a session of its own, its printed lines and its log."""

    process: subprocess.Popen[str]
    printed: list[str]
    logged: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return self.printed[-1].split()[2]

    @property
    def keys(self) -> dict[str, str]:
        return {
            line.split()[0]: line.split()[-1]
            for line in self.printed
            if line.split() and line.split()[-1].startswith("dfk_")
        }

    def read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.logged.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for_log(self, found: Callable[[str], bool], count: int = 1) -> list[str]:
        deadline = time.monotonic() + STARTUP_SECONDS
        with self.changed:
            while True:
                lines = [line for line in self.logged if found(line)]
                if len(lines) >= count or time.monotonic() > deadline:
                    return lines
                self.changed.wait(1.0)

    def call(self, path: str, body: Any = None, key: str = "", **headers: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers}
            | ({"Authorization": f"Bearer {key}"} if key else {}),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers, json.load(response)

    def read_from_view(self, path: str, key: str) -> tuple[Any, Any]:
        """GET ``path`` until the view answers it (bounded): the follow-up process and the
        scheduler may write to the member just after the purchase, and until the projection
        applies those too the ledger answers (correctly, but not what is checked here)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            headers, body = self.call(path, key=key)
            if headers["Daifuku-Read-From"] == "view" or time.monotonic() > deadline:
                return headers, body
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@contextmanager
def serving(database_url: str, *args: str, **env: str) -> Iterator[Served]:
    """``daifuku serve --port 0 ARGS`` with a fresh store; killed (as a whole) if still running."""
    environ = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    environ.pop("DAIFUKU_SECRET_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", "0", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        for line in process.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("Listening on "):
                break
        served = Served(process, printed)
        threading.Thread(target=served.read_log, daemon=True).start()
        assert printed and printed[-1].startswith("Listening on http://127.0.0.1:"), printed
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def request_lines(served: Served, request_id: str) -> list[str]:
    return served.wait_for_log(lambda line: request_id in line and "daifuku.requests" in line)


def test_serve_answers_on_gunicorn_with_the_background_work_once(database_url: str) -> None:
    postgres = database_url.startswith("postgres")
    with serving(database_url) as served:
        keys = served.keys
        assert list(keys) == ["storefront", "auditor", "admin"]
        workers = min(max(2, cpu_count()), 3) if postgres else 1
        assert f"Serving with gunicorn: {workers} x 8 threads" in served.printed
        with urllib.request.urlopen(f"{served.url}/healthz", timeout=30) as response:
            assert response.headers["Server"].startswith("gunicorn")
        # The master's children: the HTTP workers and the dirty arbiter, whose one child is
        # the process running the scheduler and the projection worker.
        started = served.wait_for_log(lambda line: "background work started" in line)
        assert len(started) == 1, served.logged
        below = children(served.process.pid)
        assert len(below) == workers + 1, below
        assert sorted(len(children(pid)) for pid in below) == [0] * workers + [1]

        storefront = keys["storefront"]
        served.call("/v1/members", {"member_id": "ann", "email": "ann@example.com"}, storefront)
        order = {"order_id": "A-1", "member_id": "ann", "amount": "12.00", "currency": "USD"}
        _, bought = served.call("/v1/purchases", order, storefront)
        # The background projection brings the views to the purchase, read by a worker.
        path = f"/v1/members/ann?after={bought['position']}"
        headers, status = served.read_from_view(path, storefront)
        assert headers["Daifuku-Read-From"] == "view"
        assert status["points"]["pending"] == 12
        assert served.stop() == 0
    stopped = [line for line in served.logged if "background work stopped" in line]
    assert len(stopped) == 1, served.logged
    assert len([line for line in served.logged if "background work started" in line]) == 1


def test_the_background_work_starts_again_if_its_process_dies(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        assert served.wait_for_log(lambda line: "background work started" in line)
        (arbiter,) = [pid for pid in children(served.process.pid) if children(pid)]
        (background,) = children(arbiter)
        os.kill(background, signal.SIGKILL)
        started = served.wait_for_log(lambda line: "background work started" in line, count=2)
        assert len(started) == 2, served.logged
        (again,) = children(arbiter)
        assert again != background
        storefront = served.keys["storefront"]
        served.call("/v1/members", {"member_id": "bo", "email": "b@x.io"}, storefront)
        order = {"order_id": "B-1", "member_id": "bo", "amount": "5.00", "currency": "USD"}
        _, bought = served.call("/v1/purchases", order, storefront)
        path = f"/v1/members/bo?after={bought['position']}"
        headers, _ = served.read_from_view(path, storefront)
        assert headers["Daifuku-Read-From"] == "view"  # the new process projects
        assert served.stop() == 0


def test_the_background_work_delivers_webhooks(sqlite_url: str) -> None:
    with (
        Receiver() as receiver,
        serving(sqlite_url, DAIFUKU_WEBHOOKS_ALLOW_PRIVATE="1") as served,
    ):
        keys = served.keys
        _, made = served.call(
            "/v1/webhooks", {"url": receiver.url, "types": ["purchase.recorded"]}, keys["admin"]
        )
        order = {"order_id": "W-1", "member_id": "wen", "amount": "9.00", "currency": "USD"}
        served.call("/v1/members", {"member_id": "wen", "email": "w@x.io"}, keys["storefront"])
        served.call("/v1/purchases", order, keys["storefront"])
        (message,) = receiver.wait_for(1, timeout=STARTUP_SECONDS)
        body = Webhook(made["secret"]).verify(message.body, message.headers)
        assert body["type"] == "purchase.recorded" and body["data"]["order_id"] == "W-1"
        assert served.stop() == 0


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_one_log_line_per_request_without_keys_or_query(sqlite_url: str, log_format: str) -> None:
    with serving(sqlite_url, DAIFUKU_LOG_FORMAT=log_format) as served:
        storefront = served.keys["storefront"]
        headers, _ = served.call(
            "/v1/members?email=ann%40example.com",
            {"member_id": "ann", "email": "ann@example.com"},
            storefront,
            **{"X-Request-Id": "order-flow-1"},
        )
        assert headers["X-Request-Id"] == "order-flow-1"
        headers, _ = served.call("/v1/members/ann", key=storefront, **{"X-Request-Id": "bad id!"})
        generated = headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        with pytest.raises(urllib.error.HTTPError) as refused:
            served.call("/v1/program", key="dfk_not-a-key", **{"X-Request-Id": "no-key-1"})
        assert refused.value.code == 401

        (created,) = request_lines(served, "order-flow-1")
        (read,) = request_lines(served, generated)
        (unauthorized,) = request_lines(served, "no-key-1")
        assert served.stop() == 0
    everything = "\n".join(served.logged)
    assert not KEY.search(everything), "a key or token in the log"
    assert "example.com" not in everything, "the query string (an email) in the log"
    assert not any(line.count("daifuku.requests") > 1 for line in served.logged)
    if log_format == "json":
        fields = [json.loads(line) for line in (created, read, unauthorized)]
        assert all(json.loads(line) for line in served.logged)  # every line is JSON
        assert [
            {name: found[name] for name in ("request_id", "method", "path", "status", "role")}
            for found in fields
        ] == [
            {"request_id": "order-flow-1", "method": "POST", "path": "/v1/members",
             "status": 201, "role": "storefront"},
            {"request_id": generated, "method": "GET", "path": "/v1/members/ann",
             "status": 200, "role": "storefront"},
            {"request_id": "no-key-1", "method": "GET", "path": "/v1/program",
             "status": 401, "role": "-"},
        ]  # fmt: skip
        assert all(isinstance(found["duration_ms"], float) for found in fields)
    else:
        plain = re.compile(r" INFO daifuku\.requests (\S+) (\S+) (\S+) (\d+) [0-9.]+ms role=(\S+)$")
        assert [plain.search(line).groups() for line in (created, read, unauthorized)] == [  # type: ignore[union-attr]
            ("order-flow-1", "POST", "/v1/members", "201", "storefront"),
            (generated, "GET", "/v1/members/ann", "200", "storefront"),
            ("no-key-1", "GET", "/v1/program", "401", "-"),
        ]


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        # The background work starts beside the workers: stopping before it has started would
        # test another thing (a loaded machine once took longer than this test's first request).
        assert served.wait_for_log(lambda line: "background work started" in line)
        storefront = served.keys["storefront"]
        host, port = served.url.removeprefix("http://").split(":")
        body = json.dumps({"member_id": "late", "email": "late@example.com"}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                b"POST /v1/members HTTP/1.1\r\n"
                + f"Host: {host}\r\nAuthorization: Bearer {storefront}\r\n".encode()
                + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            # gunicorn answers 100 Continue once a worker thread has the request in hand.
            reply = connection.makefile("rb")
            assert reply.readline().startswith(b"HTTP/1.1 100"), "no 100 Continue"
            assert reply.readline() == b"\r\n"
            served.process.send_signal(signal.SIGTERM)
            # The master signals the HTTP workers and the background work's process at once;
            # once the latter has stopped, the workers are stopping too.
            assert served.wait_for_log(lambda line: "background work stopped" in line)
            connection.sendall(body)
            status_line = reply.readline()
            assert status_line.startswith(b"HTTP/1.1 201"), status_line
            headers = dict(
                line.decode().rstrip("\r\n").split(": ", 1)
                for line in iter(reply.readline, b"\r\n")
            )
            answer = json.loads(reply.read(int(headers["Content-Length"])))
            assert answer["member_id"] == "late"
        assert served.process.wait(timeout=60) == 0
    assert any("POST /v1/members 201" in line for line in served.logged), served.logged


def test_dev_serves_with_werkzeug(sqlite_url: str) -> None:
    with serving(sqlite_url, "--dev") as served:
        assert list(served.keys) == ["storefront", "auditor", "admin"]
        with urllib.request.urlopen(f"{served.url}/healthz", timeout=30) as response:
            assert response.headers["Server"].startswith("Werkzeug")
            assert json.load(response)["status"] == "ok"
        storefront = served.keys["storefront"]
        served.call("/v1/members", {"member_id": "ann", "email": "ann@example.com"}, storefront)
        (line,) = served.wait_for_log(lambda line: "POST /v1/members 201" in line)
        assert "role=storefront" in line
        os.killpg(served.process.pid, signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0


def test_serve_refuses_a_bad_worker_count(sqlite_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--workers", "0"],
        cwd=ROOT,
        env={**os.environ, "DAIFUKU_DATABASE_URL": sqlite_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--workers" in done.stderr


def test_a_path_cannot_break_the_log_line(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        response = server.client.get("/v1/members/a%0A2026%20INFO%20forged?email=a@b.c")
    (record,) = [record for record in caplog.records if record.name == REQUEST_LOGGER]
    line = record.getMessage()
    assert "\n" not in line and " forged" not in line and "a@b.c" not in line, line
    assert record.fields["path"] == "/v1/members/a%0A2026%20INFO%20forged"  # type: ignore[attr-defined]
    assert record.fields["status"] == response.status_code  # type: ignore[attr-defined]
    formatted = json.loads(JsonFormatter().format(record))
    assert formatted["path"] == record.fields["path"]  # type: ignore[attr-defined]
    assert formatted["level"] == "INFO" and formatted["logger"] == REQUEST_LOGGER


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (2, 2), (3, 3), (16, 3)])
def test_default_workers_suit_the_store(
    cores: int, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daifuku_server, "cpu_count", lambda: cores)
    postgres = Settings.from_environ({"DAIFUKU_DATABASE_URL": "postgresql://u@h/db"})
    sqlite = Settings.from_environ({"DAIFUKU_DATABASE_URL": "sqlite:////tmp/x.db"})
    assert daifuku_server.default_workers(postgres) == workers
    assert daifuku_server.default_workers(sqlite) == 1
