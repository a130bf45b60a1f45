"""SIGKILL the webhook dispatcher while it delivers under a purchase load; once restarted,
every subscribed ledger event reaches the receiver, in each member's order, under one id.

On each store, as in production: ``daifuku webhooks`` in a session of its own, on the same
``DAIFUKU_DATABASE_URL`` as the server, here the real app in this process (``build_app``) with
client threads enrolling members and recording their purchases. One receiver on loopback is
subscribed to three types; it answers 500 to the first arrival of a seeded few messages, so
retries (5 s later, by the schedule) cross the crashes. The dispatcher gets SIGKILL three times,
each after a seeded number of requests reached the receiver since it started, and is started
again each time. Then, once the load is over and the last dispatcher has caught up, the
receiver must have every event of those types the log holds after the subscription (and none
before it), a member's events in log order (a repeat only right after itself), and each
message under one ``webhook-id`` however often it came. ~10 s per store (25 s when busy).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from adapters.settings import Settings
from api.bootstrap import build_app, close_app
from tests.receiver import Received, Receiver, Reply

ROOT = Path(__file__).resolve().parents[2]
DAIFUKU = Path(sys.executable).parent / "daifuku"
SEED = 14
CLIENTS = 3
MEMBERS_PER_CLIENT = 10
ROUNDS = 30  # purchases per member at most: the drain after the load stays short
PAUSE = 0.03  # seconds between a client's purchases, so the load outlasts the kills
KILLS = 3
# The public types subscribed to, by the class name GET /v1/events gives their ledger events.
SUBSCRIBED = {
    "Enrolled": "member.enrolled",
    "PurchaseRecorded": "purchase.recorded",
    "TierUpgraded": "tier.upgraded",
}
AMOUNTS = ("18.00", "45.50", "120.00", "260.00", "640.00")  # 640 lifts a member's tier at once
FAILED_FIRST = 0.06  # the share of messages whose first arrival is answered 500
FAILURES_MOST = 10  # each costs its member a 5 s wait, so a few only
START_TIMEOUT = 20.0
RUN_TIMEOUT = 20.0  # for the receiver to get the requests that trigger a kill
DRAIN_TIMEOUT = 30.0


@dataclass
class Dispatchers:
    """``daifuku webhooks`` processes, one at a time, each in a session of its own."""

    env: dict[str, str]
    logs: Path
    running: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with (self.logs / f"webhooks-{self.starts}.log").open("ab") as log:
            self.running = subprocess.Popen(
                [str(DAIFUKU), "webhooks"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL to the whole session, as a power cut would."""
        assert self.running is not None
        assert self.running.poll() is None, f"the dispatcher had stopped: {self.log_tail()}"
        os.killpg(self.running.pid, signal.SIGKILL)
        self.running.wait(timeout=10)
        self.running = None

    def stop(self) -> int | None:
        """SIGTERM, as an operator stops it; its exit status (None: none was running)."""
        if self.running is None:
            return None
        process, self.running = self.running, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return None

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.logs.glob("webhooks-*.log"))
        )

    def log_tail(self) -> str:
        return self.log_text()[-4000:]


@dataclass(frozen=True)
class Arrival:
    """A request as the receiver saw it: its message's id and body, and what it answered."""

    message: str
    body: dict[str, Any]
    status: int

    @property
    def position(self) -> int:
        return int(self.body["data"]["position"])

    @property
    def member_id(self) -> str:
        return str(self.body["data"]["member_id"])


@dataclass
class FailFirstArrivals:
    """The receiver's rule: 500 to the first arrival of a seeded few messages, 200 otherwise;
    it notes every arrival (the receiver calls it one request at a time)."""

    rng: random.Random
    arrivals: list[Arrival] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __call__(self, request: Received) -> Reply:
        message = request.headers["webhook-id"]
        first = all(a.message != message for a in self.arrivals)
        failing = first and len(self.failed) < FAILURES_MOST and self.rng.random() < FAILED_FIRST
        if failing:
            self.failed.append(message)
        status = 500 if failing else 200
        self.arrivals.append(Arrival(message, json.loads(request.body), status))
        return Reply(status)

    def delivered(self) -> set[int]:
        """The positions of the messages answered 200 at least once."""
        return {a.position for a in list(self.arrivals) if a.status == 200}


@dataclass
class Shop:
    app: Flask
    keys: dict[str, str]

    def call(self, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        response = self.app.test_client().open(path, method=method, json=body, headers=headers)
        return response.status_code, response.json

    def enrol(self, member: str) -> None:
        body = {"member_id": member, "email": f"{member}@example.com"}
        status, answer = self.call("POST", "/v1/members", "storefront", body)
        assert status == 201, answer

    def purchase(self, order: str, member: str, amount: str) -> None:
        body = {"order_id": order, "member_id": member, "amount": amount, "currency": "USD"}
        status, answer = self.call("POST", "/v1/purchases", "storefront", body)
        assert status == 201, answer

    def log(self, after: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor: int | None = after
        while cursor is not None:
            status, page = self.call("GET", f"/v1/events?limit=1000&after={cursor}", "auditor")
            assert status == 200, page
            events.extend(page["items"])
            cursor = page["next"]
        return events


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[tuple[Shop, Dispatchers]]:
    env = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": database_url,
        "DAIFUKU_READ_MODELS": "ledger",
        "DAIFUKU_WEBHOOKS_ALLOW_PRIVATE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    app, _ledger, keys = build_app(Settings.from_environ(env))
    dispatchers = Dispatchers(env=env, logs=tmp_path)
    try:
        roles = {role: keys.create(role, f"crash {role}") for role in ("storefront", "admin")}
        roles["auditor"] = keys.create("auditor", "crash auditor")
        yield Shop(app, roles), dispatchers
    finally:
        dispatchers.stop()
        close_app(app)


def purchase_load(shop: Shop, client: int, stop: threading.Event, errors: list[str]) -> None:
    """Enrol this client's members, then purchases for each in turn until told to stop."""
    rng = random.Random(f"{SEED}-{client}")
    members = [f"hook-{client}-{n}" for n in range(MEMBERS_PER_CLIENT)]
    try:
        for member in members:
            shop.enrol(member)
        for line in range(1, ROUNDS + 1):
            for member in members:
                if stop.is_set():
                    return
                shop.purchase(f"{member}-{line}", member, rng.choice(AMOUNTS))
                time.sleep(PAUSE)
    except Exception as error:  # the test fails on it once the threads are joined
        errors.append(repr(error))


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, dispatchers: Dispatchers
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {dispatchers.log_tail()}"
        time.sleep(0.02)


def requests_reach(receiver: Receiver, count: int, dispatchers: Dispatchers) -> None:
    """Wait for the receiver to hold ``count`` requests (a dispatcher starting included)."""
    wait_until(
        lambda: len(receiver.received) >= count,
        START_TIMEOUT + RUN_TIMEOUT,
        f"the receiver never got {count} requests",
        dispatchers,
    )


def test_a_killed_dispatcher_skips_nothing_and_keeps_order_and_ids(
    stack: tuple[Shop, Dispatchers],
) -> None:
    shop, dispatchers = stack
    rng = random.Random(SEED)
    for n in range(3):  # before the subscription: never delivered to it
        shop.enrol(f"early-{n}")
        shop.purchase(f"early-{n}-1", f"early-{n}", "640.00")
    with Receiver() as receiver:
        rule = FailFirstArrivals(random.Random(SEED + 1))
        receiver.answer_with(rule)
        subscription = {"url": receiver.url, "types": list(SUBSCRIBED.values())}
        status, made = shop.call("POST", "/v1/webhooks", "admin", subscription)
        assert status == 201, made
        (subscribed_at,) = [e["position"] for e in shop.log(0) if e["type"] == "Subscribed"]

        stop = threading.Event()
        errors: list[str] = []
        clients = [
            threading.Thread(target=purchase_load, args=(shop, n, stop, errors))
            for n in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        try:
            for _kill in range(KILLS):
                dispatchers.start()
                requests_reach(receiver, len(receiver.received) + rng.randint(20, 90), dispatchers)
                dispatchers.kill()  # mid-delivery: it sends a request every few milliseconds
            dispatchers.start()
            time.sleep(rng.uniform(0.5, 1.5))  # the load goes on under the last one a while
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)
        assert not errors, errors

        expected = {
            e["position"]: e
            for e in shop.log(subscribed_at)
            if e["type"] in SUBSCRIBED and e["position"] > subscribed_at
        }

        wait_until(
            lambda: set(expected) <= rule.delivered(),
            DRAIN_TIMEOUT,
            "not every subscribed event was delivered",
            dispatchers,
        )
        assert dispatchers.stop() == 0, dispatchers.log_tail()
        arrivals = list(rule.arrivals)

    assert rule.delivered() == set(expected)  # nothing skipped, nothing from before or beside
    assert {a.position for a in arrivals} == set(expected)
    for arrival in arrivals:
        event = expected[arrival.position]
        assert arrival.body["type"] == SUBSCRIBED[event["type"]], (arrival, event)
        assert arrival.member_id == event["member_id"], (arrival, event)
    ids_of: dict[int, set[str]] = {}
    for arrival in arrivals:
        ids_of.setdefault(arrival.position, set()).add(arrival.message)
    assert all(len(ids) == 1 for ids in ids_of.values()), {
        p: ids for p, ids in ids_of.items() if len(ids) > 1
    }
    assert len({a.message for a in arrivals}) == len(expected)  # and no id for two events

    by_member: dict[str, list[int]] = {}
    for arrival in arrivals:  # a 500 included: the receiver saw the later one first otherwise
        by_member.setdefault(arrival.member_id, []).append(arrival.position)
    out_of_order = {m: seen for m, seen in by_member.items() if seen != sorted(seen)}
    assert not out_of_order, out_of_order

    for state in ("pending", "failed"):  # and the outbox knows: nothing waits, nothing gave up
        path = f"/v1/webhooks/{made['id']}/deliveries?state={state}"
        status, listed = shop.call("GET", path, "auditor")
        assert status == 200 and listed["items"] == [], (state, listed)
    repeats = len(arrivals) - len(expected) - len(rule.failed)
    logs = dispatchers.log_text()
    assert "Traceback" not in logs and "pass failed" not in logs, logs[-4000:]
    assert rule.failed, "no 500 was answered: the retries were not exercised"
    assert dispatchers.starts == KILLS + 1
    print(
        f"webhook crash: {len(expected)} events delivered, {repeats} repeats after a 2xx, "
        f"{len(rule.failed)} answered 500, {KILLS} kills"
    )
