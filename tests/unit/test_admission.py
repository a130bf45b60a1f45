"""Writes take turns within a process; reads and refused requests never hold a turn."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from werkzeug.test import EnvironBuilder

from adapters.settings import ConfigurationError, Settings
from api import admission
from api.bootstrap import build_app, close_app
from api.problems import Problem, register

WAIT = 5.0


class Gate:
    """POST /slow holds its turn until released; the test sees who is inside."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        self.release.wait(WAIT)
        with self.lock:
            self.inside -= 1


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def app(gate: Gate) -> Iterator[Flask]:
    app = Flask("admission")
    register(app)

    @app.before_request
    def refuse() -> None:
        if request.headers.get("Authorization") != "ok":
            raise Problem(401, "no key")

    admission.limit_writes(app, 1)

    @app.post("/slow")
    def slow() -> str:
        request.get_data()  # as a view parsing its JSON body does
        gate.enter()
        return "done"

    @app.post("/fails")
    def fails() -> str:
        raise RuntimeError("boom")

    @app.get("/read")
    def read() -> str:
        return "read"

    yield app
    gate.release.set()


def call(app: Flask, method: str, path: str, results: list[int]) -> threading.Thread:
    def run() -> None:
        response = app.test_client().open(path, method=method, headers={"Authorization": "ok"})
        results.append(response.status_code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_second_write_waits_for_the_first_while_reads_go_through(app: Flask, gate: Gate) -> None:
    results: list[int] = []
    first = call(app, "POST", "/slow", results)
    assert gate.entered.acquire(timeout=WAIT)
    second = call(app, "POST", "/slow", results)
    assert not gate.entered.acquire(timeout=0.3)  # held back before it starts
    client = app.test_client()
    assert client.get("/read", headers={"Authorization": "ok"}).status_code == 200
    gate.release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert results == [200, 200]
    assert gate.most_inside == 1


def test_a_failed_or_refused_write_gives_its_turn_back(app: Flask, gate: Gate) -> None:
    client = app.test_client()
    assert client.post("/fails", headers={"Authorization": "ok"}).status_code == 500
    assert client.post("/slow").status_code == 401  # refused before taking a turn
    gate.release.set()
    assert client.post("/slow", headers={"Authorization": "ok"}).status_code == 200


class SlowBody(io.RawIOBase):
    """A request body whose bytes arrive only once ``arrive`` is set."""

    def __init__(self, data: bytes, arrive: threading.Event) -> None:
        self.data = data
        self.arrive = arrive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.arrive.wait(6 * WAIT)
        size = min(len(buffer), len(self.data))
        buffer[:size], self.data = self.data[:size], self.data[size:]
        return size


def test_a_client_sending_its_body_slowly_holds_up_no_other_write(app: Flask, gate: Gate) -> None:
    arrive = threading.Event()
    slow_done: list[int] = []

    def slow_client() -> None:
        environ = EnvironBuilder(
            path="/slow", method="POST", headers={"Authorization": "ok"}
        ).get_environ()
        # Straight into the WSGI app: the test client would read the whole body first.
        environ.update({"wsgi.input": SlowBody(b'{"a": 1}', arrive), "CONTENT_LENGTH": "8"})
        statuses: list[str] = []
        b"".join(app(environ, lambda status, headers: statuses.append(status)))
        slow_done.append(int(statuses[0].split()[0]))

    slow = threading.Thread(target=slow_client)
    slow.start()
    time.sleep(0.2)  # the slow client is waiting for its body's bytes
    results: list[int] = []
    try:
        other = call(app, "POST", "/slow", results)
        assert gate.entered.acquire(timeout=WAIT)  # the complete request got the turn
        assert gate.inside == 1 and not slow_done
        gate.release.set()
        other.join(WAIT)
    finally:
        arrive.set()
    slow.join(WAIT)
    assert results == [200] and slow_done == [200]


def test_an_unknown_route_is_answered_at_once_while_the_turn_is_taken(
    app: Flask, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "WAIT_SECONDS", 1.0)  # a 503 after 1 s if it waited
    results: list[int] = []
    first = call(app, "POST", "/slow", results)
    assert gate.entered.acquire(timeout=WAIT)
    client = app.test_client()
    assert client.post("/nowhere", headers={"Authorization": "ok"}).status_code == 404
    assert client.delete("/slow", headers={"Authorization": "ok"}).status_code == 405
    gate.release.set()
    first.join(WAIT)


def test_a_write_that_waits_too_long_is_told_to_retry(
    app: Flask, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "WAIT_SECONDS", 0.2)
    results: list[int] = []
    first = call(app, "POST", "/slow", results)
    assert gate.entered.acquire(timeout=WAIT)
    response = app.test_client().post("/slow", headers={"Authorization": "ok"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json is not None and response.json["title"] == "Server busy"
    gate.release.set()
    first.join(WAIT)
    assert results == [200]


def test_the_number_of_turns_comes_from_the_environment() -> None:
    assert Settings.from_environ({}).write_concurrency == 1
    assert Settings.from_environ({"DAIFUKU_WRITE_CONCURRENCY": "4"}).write_concurrency == 4
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigurationError, match="DAIFUKU_WRITE_CONCURRENCY"):
            Settings.from_environ({"DAIFUKU_WRITE_CONCURRENCY": bad})


def test_the_server_holds_back_writes_beyond_its_concurrency(
    tmp_path: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_environ(
        {"DAIFUKU_DATABASE_URL": f"sqlite:///{tmp_path}/a.db", "DAIFUKU_WRITE_CONCURRENCY": "1"}
    )
    app, ledger, keys = build_app(settings)
    try:
        key = keys.create("storefront", "admission")
        headers = {"Authorization": f"Bearer {key}"}

        def held_purchase(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
            gate.enter()
            raise AssertionError("not reached while the test holds the gate")

        monkeypatch.setattr(ledger, "record_purchase", held_purchase)
        body = {"order_id": "o-1", "member_id": "ann", "amount": "1.00", "currency": "USD"}
        threads = [
            threading.Thread(target=app.test_client().post, args=("/v1/purchases",),
                             kwargs={"json": body, "headers": headers})
            for _ in range(2)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        assert gate.entered.acquire(timeout=WAIT)
        assert not gate.entered.acquire(timeout=0.3)  # the second is held back
        health = app.test_client().get("/healthz")
        assert health.status_code == 200  # a read goes through meanwhile
        gate.release.set()
        for thread in threads:
            thread.join(WAIT)
        assert gate.most_inside == 1
    finally:
        gate.release.set()
        close_app(app)
