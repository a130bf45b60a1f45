"""Scale: the analytics reads timed through the HTTP server with ``--scale-members`` members.

In a database of its own, for each size in ascending order: members up to that size imported by
``daifuku import`` (a ``bench.history`` history of the missing members, ``RECORDS_PER_MEMBER``
records each, so most of them have purchases for the value page to rank); ``daifuku project``
started and waited for until the read models reach the head of the log (that time is recorded),
then stopped; the API under the bench's gunicorn configuration started on that database; each of
``READS`` called once untimed (its time plans the rest) and then ``--scale-calls`` times with an
auditor key, one after another on one keep-alive connection, fewer when a call is slow: the
timed calls of a read stop after ``--scale-budget`` seconds (never fewer than ``MIN_CALLS``), and
a call that takes longer than ``--scale-timeout`` ends that read (its figures are then the
timeout, marked). The server is stopped before the next size is imported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, log
from bench.database import bench_database, count_events, events_table
from bench.history import SEED, generate
from bench.importing import MASTER_KEY, run_import
from bench.server import Server, create_storefront_key
from bench.stats import ms, percentile
from bench.worker_lag import LogPositions, ProjectionWorkerProcess

RECORDS_PER_MEMBER = 2  # the enrolment and, on average, about one more record
MIN_CALLS = 3
# (name in the figures, path)
READS = (
    ("summary", "/v1/analytics/summary"),
    ("value_page", "/v1/analytics/members?limit=100"),
    ("value_class_page", "/v1/analytics/members?class=A&limit=100"),
)
ENV = {"DAIFUKU_MASTER_KEY": MASTER_KEY}  # the import's; the server and the worker need it too


def parse_sizes(text: str) -> list[int]:
    """``10000,100000`` -> [10000, 100000]: ascending, distinct, each at least 1."""
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"member counts separated by commas, not {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise ValueError(f"at least one member count, each at least 1, not {text!r}")
    return sizes


def planned_calls(first_seconds: float, wanted: int, budget: float) -> int:
    """How many timed calls fit in ``budget`` seconds at ``first_seconds`` a call: ``wanted``
    at most, ``MIN_CALLS`` at least (or ``wanted`` if fewer are wanted)."""
    fits = math.floor(budget / first_seconds) if first_seconds > 0 else wanted
    return max(min(wanted, fits), min(MIN_CALLS, wanted))


def read_figures(seconds: list[float], timed_out: bool, timeout: float) -> dict[str, Any]:
    """p50 and p99 (ms) of the calls; a call that timed out counts as ``timeout`` seconds."""
    values = [*seconds, timeout] if timed_out else list(seconds)
    return {
        "calls": len(values),
        "timed_out": timed_out,
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values, default=math.nan)),
    }


def scale_ratios(by_size: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per read: its p50 at the largest size (ms), and over its p50 at the smallest; per size,
    the read models' catch-up and each read's p50 (``scale_<members>_...``)."""
    figures: dict[str, Any] = {}
    if not by_size:
        return figures
    for size, step in sorted(by_size.items()):
        figures[f"scale_{size}_project_s"] = step.get("project_seconds")
        for name, got in step.get("reads", {}).items():
            figures[f"scale_{size}_{name}_p50_ms"] = got.get("p50_ms")
    smallest, largest = min(by_size), max(by_size)
    for name, _path in READS:
        low = by_size[smallest]["reads"].get(name, {}).get("p50_ms")
        high = by_size[largest]["reads"].get(name, {}).get("p50_ms")
        if high is None or math.isnan(high):
            continue
        figures[f"{name}_p50_ms"] = high
        if largest != smallest and low and not math.isnan(low):
            figures[f"{name}_p50_ratio"] = round(high / low, 2)
    return figures


class Caller:
    """GET with an auditor key on one keep-alive connection; a new one after a timeout."""

    def __init__(self, port: int, key: str, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Bearer {key}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str) -> float | None:
        """Seconds the call took; None if it took longer than the timeout."""
        began = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except TimeoutError:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            return None
        took = time.perf_counter() - began
        if response.status != 200:
            raise BenchError(f"GET {path}: {response.status} {body[:300].decode(errors='replace')}")
        if path.startswith("/v1/analytics/members") and not json.loads(body).get("items"):
            raise BenchError(f"GET {path} ranked nobody: {body[:300].decode(errors='replace')}")
        return took

    def close(self) -> None:
        self.conn.close()


def time_read(caller: Caller, path: str, args: argparse.Namespace) -> dict[str, Any]:
    first = caller.get(path)
    if first is None:
        return {"first_s": None, **read_figures([], True, args.scale_timeout)}
    calls = planned_calls(first, args.scale_calls, args.scale_budget)
    seconds: list[float] = []
    timed_out = False
    started = time.monotonic()
    while len(seconds) < calls:
        took = caller.get(path)
        if took is None:
            timed_out = True
            break
        seconds.append(took)
        if len(seconds) >= MIN_CALLS and time.monotonic() - started > args.scale_budget:
            break
    return {"first_s": round(first, 3), **read_figures(seconds, timed_out, args.scale_timeout)}


def scale_phase(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    by_size: dict[int, dict[str, Any]] = {}
    with bench_database(admin_url, args.keep_database) as url:
        have = 0
        key = ""
        for index, size in enumerate(args.scale_members):
            step: dict[str, Any] = {"members_added": size - have}
            step.update(_grow(args, url, index, size - have))
            have = size
            if not key:
                key, _ = create_storefront_key(url, "auditor", ENV)
            step.update(_catch_up(args, url))
            step["reads"] = _time_reads(args, url, key, size)
            step["events"] = count_events(url, events_table(url))[0]
            by_size[size] = step
    return {"sizes": by_size, **scale_ratios(by_size)}


def _grow(args: argparse.Namespace, url: str, index: int, members: int) -> dict[str, Any]:
    records = members * RECORDS_PER_MEMBER
    log(f"scale: importing {members:,} more members in {records:,} records")
    started = time.perf_counter()
    history = generate(members, records, seed=SEED + 1 + index, prefix=f"s{index}")
    with tempfile.TemporaryDirectory(prefix="daifuku-bench-scale-") as tmp:
        folder = Path(tmp)
        path = folder / "history.jsonl"
        history.write(path)
        generated = time.perf_counter() - started
        imported = run_import(args, url, path, folder)
    report = imported["report"]
    if imported["status"] != 0:
        log(f"WARNING: {report.get('rejected')} records rejected: {imported['rejects_sample'][:1]}")
    return {
        "generated": history.counts,
        "generate_seconds": round(generated, 1),
        "import_seconds": round(imported["seconds"], 1),
        "import_applied": report.get("applied"),
        "import_rejected": report.get("rejected"),
    }


def _catch_up(args: argparse.Namespace, url: str) -> dict[str, Any]:
    worker = ProjectionWorkerProcess(url, args.worker_poll, ENV, name="scale")
    positions = LogPositions(url, events_table(url))
    started = time.monotonic()
    try:
        worker.start()
        took = positions.wait_caught_up(worker, timeout=args.scale_project_timeout)
    finally:
        positions.close()
        code = worker.stop()
    if code not in (0, None):
        log(f"WARNING: the projection worker exited with {code}:\n{worker.log_tail()}")
    else:
        worker.log_path.unlink(missing_ok=True)
    log(f"  read models caught up in {took:.1f} s (`daifuku project`, start-up included; "
        f"{time.monotonic() - started:.1f} s with its stop)")  # fmt: skip
    return {"project_seconds": round(took, 1)}


def _time_reads(args: argparse.Namespace, url: str, key: str, size: int) -> dict[str, Any]:
    server = Server(
        url, args.workers, args.threads, args.worker_class, args.gunicorn_args, env=ENV,
        name="scale",
    )  # fmt: skip
    reads: dict[str, Any] = {}
    try:
        server.start()
        caller = Caller(server.port, key, args.scale_timeout)
        try:
            for name, path in READS:
                reads[name] = time_read(caller, path, args)
                got = reads[name]
                late = ", one timed out" if got["timed_out"] else ""
                log(f"  {size:,} members: GET {path} p50 {got['p50_ms']} ms, p99 {got['p99_ms']} "
                    f"ms ({got['calls']} calls{late})")  # fmt: skip
        finally:
            caller.close()
    except BaseException:
        log(f"the scale server's log: {server.log_path}")
        raise
    finally:
        server.stop()
    server.log_path.unlink(missing_ok=True)
    return reads
