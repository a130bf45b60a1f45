"""The client processes that drive the API (and the raw writers): each kind runs in a process of
its own, and all the clients of a phase start together."""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import queue
import random
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from bench.common import BenchError
from bench.database import RAW_TABLE

CATEGORIES = ("tea", "coffee", "cups", "books", "snacks", "gifts")
RAW_TOPIC = "domain.members:Member.PurchaseRecorded"

_children: list[multiprocessing.process.BaseProcess] = []


class Client:
    """One keep-alive HTTP/1.1 connection to the API; reconnects once if the server closed it."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.connect()
        self.reconnects = 0

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError):
                # A keep-alive connection the server closed; every request here is idempotent.
                self.conn.close()
                self.reconnects += 1
                if attempt:
                    raise
        raise AssertionError("unreachable")


def purchase_body(order_id: str, member_id: str, rng: random.Random) -> dict[str, Any]:
    cents = rng.randint(500, 20_000)
    amount = f"{cents // 100}.{cents % 100:02d}"
    category = rng.choice(CATEGORIES)
    return {
        "order_id": order_id,
        "member_id": member_id,
        "amount": amount,
        "currency": "USD",
        "items": [
            {
                "sku": f"{category}-{rng.randint(1, 40)}",
                "category": category,
                "quantity": 1,
                "unit_price": amount,
            }
        ],
    }


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.samples: list[str] = []

    def add(self, status: int, body: bytes, what: str) -> bool:
        if 200 <= status < 300:
            self.ok += 1
            return True
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(f"{what}: {status} {body[:300].decode(errors='replace')}")
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "error_samples": self.samples}


def enrol_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    client = Client(spec["port"], spec["key"])
    tally = Tally()
    ready()
    for member_id in spec["member_ids"]:
        body = {"member_id": member_id, "email": f"{member_id}@bench.example", "name": "Bench"}
        tally.add(*client.call("POST", "/v1/members", body), f"enrol {member_id}")
    return {**tally.as_dict()}


def load_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Purchases for random members, back to back, for warmup + duration seconds."""
    client = Client(spec["port"], spec["key"])
    rng = random.Random(spec["seed"])
    members = spec["member_ids"]
    prefix = spec["order_prefix"]
    path = spec.get("path", "/v1/purchases")  # the ceiling's endpoints take the same body
    tally = Tally()
    starts: list[float] = []
    latencies: list[float] = []
    ready()
    t0 = time.monotonic()
    end = t0 + spec["warmup"] + spec["duration"]
    sequence = 0
    while True:
        began = time.monotonic()
        if began >= end:
            break
        sequence += 1
        body = purchase_body(f"{prefix}-{sequence}", rng.choice(members), rng)
        status, answer = client.call("POST", path, body)
        finished = time.monotonic()
        if tally.add(status, answer, "purchase"):
            starts.append(began - t0)
            latencies.append(finished - began)
    return {
        **tally.as_dict(),
        "starts": starts,
        "latencies": latencies,
        "reconnects": client.reconnects,
    }


def status_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Member status at a steady rate (no catching up in bursts) for warmup + duration."""
    client = Client(spec["port"], spec["key"])
    rng = random.Random(spec["seed"])
    members = spec["member_ids"]
    interval = 1.0 / spec["rate"]
    tally = Tally()
    starts: list[float] = []
    latencies: list[float] = []
    ready()
    t0 = time.monotonic()
    end = t0 + spec["warmup"] + spec["duration"]
    planned = t0
    while True:
        planned = max(planned + interval, time.monotonic())
        if planned >= end:
            break
        time.sleep(max(planned - time.monotonic(), 0))
        member_id = rng.choice(members)
        began = time.monotonic()
        status, answer = client.call("GET", f"/v1/members/{member_id}")
        finished = time.monotonic()
        if tally.add(status, answer, f"status {member_id}"):
            starts.append(began - t0)
            latencies.append(finished - began)
    return {**tally.as_dict(), "starts": starts, "latencies": latencies}


def bulk_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Purchases number ``first, first + step, ...`` below ``total``, member ``n % members``."""
    client = Client(spec["port"], spec["key"])
    rng = random.Random(spec["seed"])
    tally = Tally()
    ready()
    for number in range(spec["first"], spec["total"], spec["step"]):
        member_id = f"{spec['member_prefix']}{number % spec['members']}"
        body = purchase_body(f"{spec['order_prefix']}-{number}", member_id, rng)
        tally.add(*client.call("POST", "/v1/purchases", body), "purchase")
    return {**tally.as_dict(), "reconnects": client.reconnects}


def raw_insert_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """One-row INSERT + COMMIT, back to back, for ``duration`` seconds.

    With ``locked`` each transaction first takes the table in EXCLUSIVE mode, as the event
    store does, and the lock, the INSERT and the COMMIT go as one pipeline (one round trip):
    commits one at a time, each with its own WAL flush.
    """
    payload = os.urandom(spec["state_bytes"])
    statement = sql.SQL(
        "INSERT INTO {} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(RAW_TABLE))
    lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(RAW_TABLE))
    count = 0
    with psycopg.connect(spec["url"]) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        ready()
        end = time.monotonic() + spec["duration"]
        if spec.get("locked"):
            with conn.pipeline():
                while time.monotonic() < end:
                    conn.execute(lock, prepare=True)
                    conn.execute(statement, (uuid.uuid4(), 1, RAW_TOPIC, payload), prepare=True)
                    conn.commit()
                    count += 1
        else:
            while time.monotonic() < end:
                conn.execute(statement, (uuid.uuid4(), 1, RAW_TOPIC, payload), prepare=True)
                conn.commit()
                count += 1
    return {"ok": count, "errors": 0, "error_samples": []}


def peer_client(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    from bench.peer import peer_writers  # noqa: PLC0415 (eventsourcing only where it runs)

    return peer_writers(spec, ready)


CLIENTS: dict[str, Callable[[dict[str, Any], Callable[[], None]], dict[str, Any]]] = {
    "enrol": enrol_client,
    "peer": peer_client,
    "load": load_client,
    "status": status_client,
    "bulk": bulk_client,
    "raw": raw_insert_client,
}


def _client_process(kind: str, spec: dict[str, Any], barrier: Any, results: Any) -> None:
    started_cpu = 0.0

    def ready() -> None:
        nonlocal started_cpu
        barrier.wait(timeout=120)
        started_cpu = time.process_time()

    try:
        result = CLIENTS[kind](spec, ready)
        result["cpu"] = time.process_time() - started_cpu  # after start-up, imports, connecting
        result["index"] = spec["index"]
        results.put(result)
    except KeyboardInterrupt:
        pass
    except BaseException:
        results.put({"error": f"{kind} client failed:\n{traceback.format_exc()}"})
        with contextlib.suppress(Exception):
            barrier.abort()


def run_clients(
    jobs: list[tuple[str, dict[str, Any]]],
    timeout: float,
    on_start: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """Run each (kind, spec) in its own process; all start together (``on_start`` is called
    then); results in job order."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs) + 1)
    results = context.Queue()
    processes = []
    for index, (kind, spec) in enumerate(jobs):
        process = context.Process(
            target=_client_process,
            args=(kind, {**spec, "index": index}, barrier, results),
            daemon=True,
        )
        processes.append(process)
        _children.append(process)
        process.start()
    try:
        # A client that failed before starting breaks the barrier; its error is in the queue.
        with contextlib.suppress(Exception):
            barrier.wait(timeout=120)
        if on_start is not None:
            on_start()
        collected: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(collected) < len(jobs):
            try:
                item = results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise BenchError(f"clients did not finish within {timeout:.0f} s") from None
                died = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if died:
                    raise BenchError(f"a client process died (exit codes {died})") from None
                continue
            if "error" in item:
                raise BenchError(item["error"])
            collected.append(item)
        # The queue has them in the order they finished.
        return sorted(collected, key=lambda item: int(item["index"]))
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            _children.remove(process)


def stop_children() -> None:
    for process in list(_children):
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def errors_of(results: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    ok = sum(r["ok"] for r in results)
    errors = sum(r["errors"] for r in results)
    samples = [s for r in results for s in r["error_samples"]][:5]
    return ok, errors, samples


def require_no_errors(results: list[dict[str, Any]], what: str) -> None:
    ok, errors, samples = errors_of(results)
    if errors:
        detail = "\n  ".join(samples)
        raise BenchError(f"{what}: {errors} of {ok + errors} requests failed:\n  {detail}")


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


def enrol(port: int, key: str, member_ids: list[str], clients: int) -> float:
    started = time.monotonic()
    jobs = [
        ("enrol", {"port": port, "key": key, "member_ids": part})
        for part in split(member_ids, clients)
    ]
    results = run_clients(jobs, timeout=600 + len(member_ids) / 5)
    require_no_errors(results, "enrolment")
    return time.monotonic() - started
