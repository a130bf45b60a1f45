"""Webhooks beside the load: ``daifuku webhooks`` delivering every event (``["*"]``) to one
receiver on loopback while the purchase clients run.

Two figures. The delivery lag: from an event's recording (its message's ``recorded_at``) to
its arrival at the receiver, p99 over the measured windows. And purchases/s with the
dispatcher running over purchases/s without it, measured interleaved in the same run: the load
phase before it (A), then ``--webhook-rounds`` times this load (B) and the same load without
webhooks (A), all over the same members: A-B-A-B-A by default, so the machine's drift over the
run falls on both sides of the comparison (one A-B-A gave 0.75 and 0.92 in two runs of one
afternoon).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.clients import Client
from bench.common import BIN, ROOT, BenchError, log, spawn
from bench.cpu import cpu_ticks
from bench.database import events_table
from bench.load import load_phase
from bench.server import Server
from bench.stats import percentile

ENV = {"DAIFUKU_WEBHOOKS_ALLOW_PRIVATE": "1"}


class ReceiverProcess:
    """``bench.webhook_receiver`` in a process of its own."""

    def __init__(self) -> None:
        self.out = Path(f"/tmp/daifuku-bench-receiver-{os.getpid()}.json")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.webhook_receiver", str(self.out)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise BenchError("the webhook receiver did not start")

    def stop(self) -> list[list[Any]]:
        """What it received: (webhook-id, type, member, position, recorded_at, received_at)."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        rows: list[list[Any]] = json.loads(self.out.read_text())
        self.out.unlink(missing_ok=True)
        return rows


class DispatcherProcess:
    def __init__(self, database_url: str) -> None:
        self.log_path = Path(f"/tmp/daifuku-bench-webhooks-{os.getpid()}.log")
        env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **ENV}
        command = [str(BIN / "daifuku"), "webhooks"]
        self.process = spawn(command, self.log_path, env)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _outbox_state(url: str, events: str) -> tuple[int, int, int]:
    """The log's head, the dispatcher's position, and the deliveries waiting."""
    with psycopg.connect(url) as conn:
        head = conn.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(events)
            )
        ).fetchone()
        tracked = conn.execute(
            "SELECT coalesce(max(position), 0) FROM daifuku_webhook_tracking"
        ).fetchone()
        waiting = conn.execute(
            "SELECT count(*) FROM daifuku_webhook_deliveries WHERE state = 'pending'"
        ).fetchone()
    assert head is not None and tracked is not None and waiting is not None
    return int(head[0]), int(tracked[0]), int(waiting[0])


def _wait_drained(url: str, events: str, dispatcher: DispatcherProcess, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        head, tracked, waiting = _outbox_state(url, events)
        if tracked >= head and waiting == 0:
            return time.monotonic() - started
        if dispatcher.process.poll() is not None:
            raise BenchError(f"`daifuku webhooks` exited:\n{dispatcher.log_tail()}")
        time.sleep(0.1)
    raise BenchError(f"webhooks not delivered after {timeout:g} s (head {head}, "
                     f"dispatcher at {tracked}, {waiting} waiting)")  # fmt: skip


def webhook_phase(
    args: argparse.Namespace,
    server: Server,
    admin_key: str,
    key: str,
    run_id: str,
    url: str,
    before: float,
) -> dict[str, Any]:
    """``before``: purchases/s of the load phase just run without webhooks (over the members
    of ``run_id``, which every load here posts to again). Then ``--webhook-rounds`` times: the
    load with the dispatcher (B), the load without it (A)."""
    events = events_table(url)
    receiver = ReceiverProcess()
    admin = Client(server.port, admin_key)
    with_hooks: list[float] = []
    without = [before]
    windows: list[tuple[float, float]] = []
    dispatcher_seconds = receiver_seconds = 0.0
    drained: list[float] = []
    codes: list[int | None] = []
    try:
        for round_ in range(args.webhook_rounds):
            found = _round(args, server, admin, receiver, key, run_id, url, events, round_)
            with_hooks.append(found["purchases_per_s"])
            windows.append(found["window"])
            dispatcher_seconds += found["dispatcher_seconds"]
            receiver_seconds += found["receiver_seconds"]
            drained.append(found["drained"])
            codes.append(found["code"])
            log(f"  with webhooks {found['purchases_per_s']} purchases/s; drained "
                f"{found['drained']:.2f} s after the load")  # fmt: skip
            again = load_phase(args, server, key, run_id, url, again=f"a{round_}")
            without.append(again["purchases_per_s"])
            log(f"  without {again['purchases_per_s']} purchases/s")
    finally:
        received = receiver.stop()
    timed = _lags(received)
    lags = []
    for start, end in windows:  # each round's messages, after its load's warm-up
        inside = [(recorded, lag) for recorded, lag in timed if start <= recorded <= end]
        first = min((recorded for recorded, _ in inside), default=start)
        lags.extend(lag for recorded, lag in inside if recorded >= first + args.warmup)
    delivered = sum(1 for recorded, _ in timed if any(s <= recorded <= e for s, e in windows))
    mean_with = sum(with_hooks) / len(with_hooks)
    mean_without = sum(without) / len(without)
    return {
        "webhook_purchases_per_s": round(mean_with, 1),
        "webhook_rounds_purchases_per_s": with_hooks,
        "webhook_anchor_purchases_per_s": without,
        "webhook_purchases_ratio": round(mean_with / mean_without, 3),
        "webhook_messages": delivered,
        "webhook_duplicates": len(received) - len({row[0] for row in received}),
        "webhook_delivery_lag_p50_s": round(percentile(lags, 50), 3),
        "webhook_delivery_lag_p99_s": round(percentile(lags, 99), 3),
        "webhook_delivery_lag_max_s": round(max(lags, default=float("nan")), 3),
        "webhook_drained_after_load_s": max(drained, default=float("nan")),
        "webhook_dispatcher_cpu_ms_per_message": round(
            1000 * dispatcher_seconds / max(delivered, 1), 3
        ),
        "webhook_receiver_cpu_ms_per_message": round(
            1000 * receiver_seconds / max(delivered, 1), 3
        ),
        "webhook_dispatcher_exit_codes": codes,
    }


def _round(
    args: argparse.Namespace,
    server: Server,
    admin: Client,
    receiver: ReceiverProcess,
    key: str,
    run_id: str,
    url: str,
    events: str,
    round_: int,
) -> dict[str, Any]:
    """One load with webhooks: a new subscription and a dispatcher of its own, stopped and
    removed after, so that the loads without webhooks run without either."""
    status, body = admin.call(
        "POST", "/v1/webhooks", {"url": receiver.url, "types": ["*"], "description": "bench"}
    )
    if status != 201:
        raise BenchError(f"subscribing the receiver answered {status}: {body[:300]!r}")
    webhook_id = json.loads(body)["id"]
    dispatcher = DispatcherProcess(url)
    hz = os.sysconf("SC_CLK_TCK")
    try:
        caught_up = _wait_drained(url, events, dispatcher, timeout=300)
        log(f"webhook dispatcher (pid {dispatcher.process.pid}) caught up in {caught_up:.1f} s; "
            f"receiver at {receiver.url}")  # fmt: skip
        ticks = cpu_ticks([dispatcher.process.pid])
        receiver_ticks = cpu_ticks([receiver.process.pid])
        started = time.time()
        loaded = load_phase(args, server, key, run_id, url, again=f"w{round_}")
        ended = time.time()
        drained = _wait_drained(url, events, dispatcher, timeout=300)
        dispatcher_seconds = (cpu_ticks([dispatcher.process.pid]) - ticks) / hz
        receiver_seconds = (cpu_ticks([receiver.process.pid]) - receiver_ticks) / hz
    finally:
        code = dispatcher.stop()
        admin.call("DELETE", f"/v1/webhooks/{webhook_id}")
    if code not in (0, None):
        log(f"WARNING: `daifuku webhooks` exited with {code}:\n{dispatcher.log_tail()}")
    dispatcher.log_path.unlink(missing_ok=True)
    return {
        "purchases_per_s": loaded["purchases_per_s"],
        "window": (started, ended),
        "drained": round(drained, 2),
        "dispatcher_seconds": dispatcher_seconds,
        "receiver_seconds": receiver_seconds,
        "code": code,
    }


def _lags(received: list[list[Any]]) -> list[tuple[float, float]]:
    """(recorded at, seconds from recording to arrival) of each message received."""
    found = []
    for _id, _type, _member, _position, recorded_at, received_at in received:
        recorded = datetime.fromisoformat(recorded_at).timestamp()
        found.append((recorded, float(received_at) - recorded))
    return found
