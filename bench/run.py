"""Throughput, latency and memory of Daifuku on PostgreSQL, through the production WSGI server.

``python -m bench.run`` (``make bench``) runs, in one go and against one fresh database:

1. a database ``daifuku_bench_<hex>`` on a PostgreSQL server on 127.0.0.1 (dropped at the end)
   and a storefront key made with ``daifuku keys create``;
2. the API under gunicorn on a free port of 127.0.0.1, waited for on ``/healthz``;
3. load: ``--members`` members enrolled, then ``--clients`` client processes posting purchases
   for random members for ``--duration`` seconds (after ``--warmup``), each on one keep-alive
   connection, while one more client reads member status at ``--status-rate`` per second;
   with ``--worker-lag`` (the default; ``--no-worker-lag`` skips it) a projection worker
   (``daifuku project --poll`` ``--worker-poll``) runs against the same database, started and
   caught up before the clients start, and every ``--lag-interval`` seconds the bench records
   the head of the log
   (the largest notification id in the events table) and the view's tracking position; a
   sample's lag is the time until the tracking position reached that head (so it is measured
   to within one interval, rounded up), and the p50/p99/max are over the samples of the
   measured window (all of them are in ``phases.load.worker_lag_series``); the worker is
   stopped (SIGTERM) once it has caught up after the load;
4. raw: ``--raw-writers`` processes doing one-row INSERT + COMMIT into a table shaped like the
   event store's for ``--raw-duration`` seconds; the ratio purchases/s / inserts/s; then
   (``--no-raw-locked`` skips it, and it has no target) the same with the event store's
   ``LOCK TABLE ... IN EXCLUSIVE MODE`` in each transaction, which makes commits, and their
   WAL flushes, one at a time: the ceiling of any writer that keeps the log's order that way;
5. long history: one member with ``--long-events`` events; the median latency of a purchase for
   it against one for a new member (sequential, alternating);
6. memory (``--no-memory-phase`` skips it): ``--memory-purchases`` purchases across
   ``--memory-members`` new members at the best rate the load clients reach, then the peak
   resident memory of the gunicorn workers (VmHWM);
7. replay (``--no-replay-phase`` skips it): if the events table holds fewer than
   ``--replay-min-events`` events, ``--bulk-clients`` clients post purchases for the load
   phase's members until it does (after the memory figure is read, so it does not change it);
   then a raw scan of the events table with psycopg (a server-side cursor, pages of
   ``--raw-scan-page`` rows, every column, ``state`` included, in notification order),
   ``daifuku replay`` as a subprocess (its wall-clock time, start-up included: events/s), and
   the raw scan once more; the ratio is replay events/s over the faster raw scan's rows/s;
8. a table on stdout and ``bench/results.json`` with every figure, the configuration, the
   timestamps and pass or fail per target.

The server is found the way the test suite finds one: ``DAIFUKU_BENCH_DATABASE_URL`` (or
``--database-url``), else a server on 127.0.0.1:5432 as user ``postgres``, else a throwaway cluster
from the PostgreSQL binaries (``tests/conftest.py`` has the logic; it needs pytest). Only loopback
addresses are ever used. Everything started is stopped on the way out, Ctrl-C included.

Server configuration: ``--workers 2 --threads 8 --worker-class gthread`` is the default. On the
2-core machine, 10-second load runs (8 clients, 2026-11-23) gave 2x8 ~350-380 purchases/s,
3x4 ~395, 4x4 ~400, 4x2 ~270-375 with worse status reads: the differences are within the noise,
the server is bound by the event store's table lock and the GIL rather than by process count,
and every extra worker costs ~65 MiB and its own member cache, so 2x8 is kept. With the table
lock taken inside one statement (adapters/recorders.py), 20-second runs on a quiet machine
(2026-11-23, reads from the views, projection worker running) gave 2x8 205-277 purchases/s,
3x4 193-304, 4x2 243 and status p99 53-120 ms in all: still noise; the API then spends about
4-5 ms of CPU per purchase and PostgreSQL about 1.1 ms, on 2 cores shared with the clients.
On 2026-11-30 (one member read per purchase, the recorder's queries rendered once) the API
spent 2.1-3.0 ms and PostgreSQL 0.6-0.8 ms per purchase; ``DAIFUKU_WRITE_CONCURRENCY`` (writes
a worker runs at once, api/admission.py) traded purchases/s for status read latency: unlimited
360-540/s and p99 33-62 ms, 2 450-500/s and 28-32 ms, 1 340-380/s and 17-22 ms. With each
status read one statement instead of BEGIN, SELECT, ROLLBACK (adapters/views.py): 1 (the
default) 429-501/s and 12-14 ms, 2 512-546/s and 14-23 ms. The machine's own speed varied by
a third between runs of one configuration that day.
Environment variables such as ``POSTGRES_ENABLE_DB_FUNCTIONS=y`` reach the server unchanged
(they are recorded in the results), which is how variants of the event store's settings can be
compared.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import queue
import random
import re
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results.json"

ENV_URL = "DAIFUKU_BENCH_DATABASE_URL"
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DATABASE_PREFIX = "daifuku_bench_"
RAW_TABLE = "bench_raw_events"
CATEGORIES = ("tea", "coffee", "cups", "books", "snacks", "gifts")
RAW_TOPIC = "domain.members:Member.PurchaseRecorded"

TARGETS: dict[str, tuple[str, float]] = {
    "purchases_per_s": (">=", 400.0),
    "ratio": (">=", 0.25),
    "status_read_p99_ms": ("<=", 20.0),
    "long_history_ratio": ("<=", 1.5),
    "peak_rss_mb": ("<", 300.0),
    "replay_events_per_s": (">=", 5000.0),
    "replay_ratio": (">=", 0.2),
    "worker_lag_p99_s": ("<=", 1.0),
}

# Settings of the server and of the eventsourcing library that a run inherits.
PASSED_ENV_PREFIXES = (
    "DAIFUKU_",
    "POSTGRES_",
    "AGGREGATE_",
    "COMPRESSOR_",
    "CIPHER_",
    "PERSISTENCE_",
    "IS_SNAPSHOTTING",
    "DEEPCOPY_",
)
SKIPPED_MEMORY = "not measured (--no-memory-phase)"
SKIPPED_REPLAY = "not measured (--no-replay-phase)"
SKIPPED_LAG = "not measured (--no-worker-lag)"

_children: list[multiprocessing.process.BaseProcess] = []


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Throughput, latency and memory of the Daifuku API on PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--database-url", default=os.environ.get(ENV_URL, ""),
        help=f"admin URL of a PostgreSQL server on 127.0.0.1 (default: ${ENV_URL}, else "
             f"{LOCAL_ADMIN_URL}, else a throwaway cluster)")  # fmt: skip
    add("--duration", type=float, default=20.0, help="seconds of measured purchase load")
    add("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    add("--clients", type=int, default=8, help="concurrent purchase clients (processes)")
    add("--members", type=int, default=1000, help="members enrolled for the load phase")
    add("--status-rate", type=float, default=50.0, help="status reads per second under load")
    add("--raw-duration", type=float, default=10.0, help="seconds of raw INSERT + COMMIT")
    add("--raw-writers", type=int, default=8, help="concurrent raw writers")
    add("--raw-locked", action=argparse.BooleanOptionalAction, default=True,
        help="also raw INSERT + COMMIT under the event store's table lock")  # fmt: skip
    add("--long-events", type=int, default=5000, help="events of the long-history member")
    add("--long-samples", type=int, default=300, help="purchases timed per member kind")
    add("--memory-phase", action=argparse.BooleanOptionalAction, default=True,
        help="post --memory-purchases across --memory-members, then read the peak RSS")  # fmt: skip
    add("--memory-members", type=int, default=10_000)
    add("--memory-purchases", type=int, default=100_000)
    add("--memory-clients", type=int, default=8, help="concurrent clients of the memory phase")
    add("--worker-lag", action=argparse.BooleanOptionalAction, default=True,
        help="run `daifuku project` during the load; measure its lag behind writers")  # fmt: skip
    add("--lag-interval", type=float, default=0.05, help="seconds between lag samples")
    add("--worker-poll", type=float, default=0.2, help="`daifuku project --poll` (idle seconds)")
    add("--replay-phase", action=argparse.BooleanOptionalAction, default=True,
        help="time `daifuku replay` of the history against a raw scan of the events")  # fmt: skip
    add("--replay-min-events", type=int, default=200_000,
        help="purchases are added before the replay until the log has this many")  # fmt: skip
    add("--bulk-clients", type=int, default=8, help="clients adding purchases before the replay")
    add("--raw-scan-page", type=int, default=1000, help="rows per fetch of the raw scan")
    add("--workers", type=int, default=2, help="gunicorn worker processes")
    add("--threads", type=int, default=8, help="threads per gunicorn worker (gthread)")
    add("--worker-class", default="gthread", help="gunicorn worker class")
    add("--gunicorn-args", default="", help="more gunicorn options, e.g. '--keep-alive 5'")
    add("--keep-database", action="store_true",
        help="leave the bench database on the server (to profile a replay later)")  # fmt: skip
    add("--results", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    for name in ("clients", "members", "raw_writers", "workers", "threads", "memory_clients",
                 "bulk_clients", "raw_scan_page"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    positive = (args.duration, args.raw_duration, args.status_rate, args.lag_interval,
                args.worker_poll)  # fmt: skip
    if min(positive) <= 0:
        parser.error("durations and rates must be positive")
    return args


# -------------------------------------------------------------------------- PostgreSQL


def check_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"{url!r} is not a postgresql:// URL")
    host = parts.hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise BenchError(f"the bench only talks to 127.0.0.1; {url!r} names host {host!r}")


def server_problem(url: str) -> str | None:
    """None if ``url`` answers and its user may create databases, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as error:
        return str(error).strip() or type(error).__name__
    if not row or not row[0]:
        return "the user may not create databases"
    return None


@contextmanager
def postgres_server(configured: str) -> Iterator[tuple[str, str]]:
    """(admin URL, how it was found) of a server on 127.0.0.1 where the bench may create a db."""
    if configured:
        check_loopback(configured)
        problem = server_problem(configured)
        if problem:
            raise BenchError(f"{configured!r} is not usable: {problem}")
        yield configured, "configured"
        return
    if server_problem(LOCAL_ADMIN_URL) is None:
        yield LOCAL_ADMIN_URL, "local server on 127.0.0.1:5432"
        return
    # The test suite's throwaway cluster: initdb + pg_ctl into a temporary directory.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from tests.conftest import (  # noqa: PLC0415
            ClusterUnavailable,
            find_postgres_bin_dirs,
            throwaway_cluster,
        )
    except ImportError as error:
        raise BenchError(
            f"no PostgreSQL on 127.0.0.1:5432, {ENV_URL} is not set, and the throwaway-cluster "
            f"logic of tests/conftest.py cannot be imported ({error}); install the test extras "
            f"or start a server"
        ) from error
    bin_dirs = find_postgres_bin_dirs()
    if not bin_dirs:
        raise BenchError(
            f"no PostgreSQL on 127.0.0.1:5432, {ENV_URL} is not set and no PostgreSQL binaries "
            f"(initdb, pg_ctl) were found: start a server or apt-get install postgresql"
        )
    log(f"no server on 127.0.0.1:5432: starting a throwaway cluster from {bin_dirs[0]}")
    try:
        with throwaway_cluster(bin_dirs[0]) as cluster:
            yield cluster.admin_url, f"throwaway cluster from {bin_dirs[0]} (fsync off)"
    except ClusterUnavailable as error:
        raise BenchError(f"a throwaway cluster could not be started: {error}") from error


def url_with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@contextmanager
def bench_database(admin_url: str, keep: bool = False) -> Iterator[str]:
    """A fresh database on the server, dropped (with any connection left to it) on exit,
    unless ``keep`` (``--keep-database``: to profile a replay of the same history later)."""
    name = f"{DATABASE_PREFIX}{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    log(f"created database {name}")
    try:
        yield url_with_database(admin_url, name)
    finally:
        if keep:
            log(f"kept database {name} (--keep-database): drop it when done")
        else:
            drop_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        log(f"dropped database {name}")
    except psycopg.Error as error:
        log(f"WARNING: could not drop database {name}: {error}")


def server_facts(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        facts: dict[str, Any] = {}
        for setting in ("server_version", "fsync", "synchronous_commit", "max_connections",
                        "shared_buffers"):  # fmt: skip
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = row[0] if row else None
    return facts


# ------------------------------------------------------------------------ the API server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def create_storefront_key(database_url: str) -> tuple[str, str]:
    """A storefront key and how it was made: the command line first, the KeyStore otherwise."""
    env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url}
    command = [str(BIN / "daifuku"), "keys", "create", "--role", "storefront", "--name", "bench"]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    else:
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if done.returncode == 0 and lines and " " not in lines[-1]:
            return lines[-1], "daifuku keys create"
        problem = f"exit {done.returncode}: {(done.stdout + done.stderr).strip()[-500:]}"
    log(f"`daifuku keys create` failed ({problem}); using adapters.keys.KeyStore directly")
    from adapters.keys import KeyStore  # noqa: PLC0415
    from adapters.settings import Database  # noqa: PLC0415

    store = KeyStore(Database.from_url(database_url))
    try:
        return store.create("storefront", "bench"), "adapters.keys.KeyStore"
    finally:
        store.close()


def prepare_schema(database_url: str) -> None:
    """Create the event store's tables once, before the workers start.

    Two workers starting at once on an empty database both run CREATE TABLE IF NOT EXISTS and
    one of them can fail with a duplicate pg_type, which stops gunicorn; doing it here first
    keeps the bench from depending on that race.
    """
    from adapters.settings import Database  # noqa: PLC0415
    from domain.ledger import Ledger  # noqa: PLC0415

    Ledger(env=Database.from_url(database_url).event_store_env(pool_size=1)).close()


class Server:
    """The API under gunicorn, in its own session so that it is stopped as a whole."""

    def __init__(
        self, database_url: str, workers: int, threads: int, worker_class: str, extra_args: str = ""
    ) -> None:
        self.database_url = database_url
        self.extra_args = extra_args
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/daifuku-bench-gunicorn-{os.getpid()}.log")

    def command(self) -> list[str]:
        return [
            str(BIN / "gunicorn"),
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--worker-class", self.worker_class,
            "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "120",
            "--graceful-timeout", "10",
            "--log-level", "warning",
            "--error-logfile", "-",
            *shlex.split(self.extra_args),
            "api.wsgi:app",
        ]  # fmt: skip

    def start(self) -> None:
        env = {**os.environ, "DAIFUKU_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            with self.log_path.open("ab") as log_file:
                self.process = subprocess.Popen(
                    self.command(),
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_healthy() and self._wait_workers():
                return
            self.stop()
        raise BenchError(f"gunicorn never answered on /healthz:\n{self.log_tail()}")

    def _wait_healthy(self, timeout: float = 60.0) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _wait_workers(self, timeout: float = 30.0) -> bool:
        """Every worker booted (a worker that fails to boot stops the master)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                log(f"gunicorn stopped after starting:\n{self.log_tail()}")
                return False
            if len(self.worker_pids()) == self.workers and self._wait_healthy(5.0):
                time.sleep(1.0)
                if self.running() and len(self.worker_pids()) == self.workers:
                    return True
            time.sleep(0.2)
        return False

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the session we started: master + workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children_of(self.process.pid)

    def memory(self) -> dict[str, Any]:
        """VmHWM (peak) and VmRSS (now) of the master and of each worker, in MiB."""
        assert self.process is not None
        workers = {pid: proc_status(pid) for pid in self.worker_pids()}
        master = proc_status(self.process.pid)
        return {
            "workers_peak_mb": round(sum(s["VmHWM"] for s in workers.values()) / 1024, 1),
            "workers_rss_mb": round(sum(s["VmRSS"] for s in workers.values()) / 1024, 1),
            "master_peak_mb": round(master["VmHWM"] / 1024, 1),
            "per_worker": {
                str(pid): {
                    "peak_mb": round(s["VmHWM"] / 1024, 1),
                    "rss_mb": round(s["VmRSS"] / 1024, 1),
                }
                for pid, s in workers.items()
            },
        }


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process in kB (0 if it is gone)."""
    values = {"VmHWM": 0, "VmRSS": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
    return pids


def machine_ticks() -> list[int]:
    """The machine's jiffies: user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def machine_busy(seconds: float) -> float:
    """The fraction of the machine's CPU time that was busy over the next ``seconds``."""
    before = machine_ticks()
    time.sleep(seconds)
    ticks = [b - a for a, b in zip(before, machine_ticks(), strict=False)]
    return round(1 - (ticks[3] + ticks[4]) / max(sum(ticks), 1), 3)


class CpuMeter:
    """Cores used by the machine, the gunicorn workers and PostgreSQL over an interval, and by
    the processes in ``extra`` (name -> pids, reported as ``<name>_cores``)."""

    def __init__(self, server: Server, extra: dict[str, list[int]] | None = None) -> None:
        self.server = server
        self.extra = extra or {}
        self.hz = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuMeter:
        return self.start()

    def start(self) -> CpuMeter:
        """From now (``run_clients`` calls it once the clients are started and connected)."""
        self.started = time.monotonic()
        self.workers = self.server.worker_pids()
        self.postgres = postgres_pids()
        self.machine0 = machine_ticks()
        self.api0 = cpu_ticks(self.workers)
        self.pg0 = cpu_ticks(self.postgres)
        self.extra0 = {name: cpu_ticks(pids) for name, pids in self.extra.items()}
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        wall = time.monotonic() - self.started
        ticks = [b - a for a, b in zip(self.machine0, machine_ticks(), strict=False)]
        total = max(sum(ticks), 1)
        idle = ticks[3] + ticks[4]
        # Backends that connected during the interval count whole.
        new_backends = sorted(set(postgres_pids()) - set(self.postgres))
        postgres = cpu_ticks(self.postgres) - self.pg0 + cpu_ticks(new_backends)
        self.result = {
            "machine_busy_fraction": round((total - idle) / total, 3),
            "machine_softirq_fraction": round(ticks[6] / total, 3),
            "api_workers_cores": round((cpu_ticks(self.workers) - self.api0) / self.hz / wall, 2),
            "postgres_cores": round(postgres / self.hz / wall, 2),
        }
        for name, pids in self.extra.items():
            used = cpu_ticks(pids) - self.extra0[name]
            self.result[f"{name}_cores"] = round(used / self.hz / wall, 2)


# ------------------------------------------------------------- the projection worker and its lag


class ProjectionWorkerProcess:
    """``daifuku project`` against the bench database, in its own session."""

    def __init__(self, database_url: str, poll: float) -> None:
        self.database_url = database_url
        self.poll = poll
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/daifuku-bench-project-{os.getpid()}.log")

    def start(self) -> None:
        env = {**os.environ, "DAIFUKU_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        command = [str(BIN / "daifuku"), "project", "--poll", f"{self.poll:g}"]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (the command stops at the end of the event in hand); its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("WARNING: the projection worker ignored SIGTERM for 30 s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        return process.returncode

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


class LogPositions:
    """The head of the event log and the member-status view's position, in one statement."""

    def __init__(self, url: str, events: str) -> None:
        from adapters.views import TRACKING_TABLE  # noqa: PLC0415
        from domain.ledger import Ledger  # noqa: PLC0415

        self.conn = psycopg.connect(url, autocommit=True)
        self.application_name = Ledger.name
        self.statement = sql.SQL(
            "SELECT (SELECT max(notification_id) FROM {0}), "
            "(SELECT max(notification_id) FROM {1} WHERE application_name = %s)"
        ).format(sql.Identifier(events), sql.Identifier(TRACKING_TABLE))

    def read(self) -> tuple[int, int]:
        """(head, tracked): 0 for an empty log or a view that has tracked nothing yet."""
        row = self.conn.execute(self.statement, (self.application_name,), prepare=True).fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    def wait_caught_up(self, worker: ProjectionWorkerProcess, timeout: float) -> float:
        """Seconds until the view's position reaches the head (its table may not exist yet)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not worker.running():
                raise BenchError(f"the projection worker stopped:\n{worker.log_tail()}")
            try:
                head, tracked = self.read()
            except psycopg.errors.UndefinedTable:
                pass  # the worker has not created the view's tables yet
            else:
                if tracked >= head:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise BenchError(
            f"the projection worker did not catch up within {timeout:g} s:\n{worker.log_tail()}"
        )

    def close(self) -> None:
        self.conn.close()


class LagSampler:
    """(before, after, head, tracked) every ``interval`` seconds, from a thread of its own.

    ``before`` and ``after`` are the monotonic times around the statement: a head is dated
    ``before`` (it was read no earlier) and a position ``after`` (it was read no later), so a
    lag computed from them is never less than the real one.
    """

    def __init__(self, url: str, events: str, interval: float) -> None:
        self.url = url
        self.events = events
        self.interval = interval
        self.samples: list[tuple[float, float, int, int]] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            positions = LogPositions(self.url, self.events)
            try:
                next_at = time.monotonic()
                while not self._stop.is_set():
                    before = time.monotonic()
                    head, tracked = positions.read()
                    after = time.monotonic()
                    self.samples.append((before, after, head, tracked))
                    next_at = max(next_at + self.interval, after)  # late: no burst to catch up
                    self._stop.wait(next_at - time.monotonic())
            finally:
                positions.close()
        except BaseException as error:  # reported by stop()
            self.failure = error

    def wait_caught_up(
        self, since: float, worker: ProjectionWorkerProcess, timeout: float
    ) -> float:
        """Seconds after ``since`` until the position reached the head read at ``since``."""
        target = max((s[2] for s in self.samples if s[0] <= since), default=0)
        while time.monotonic() - since < timeout:
            if self.failure is not None:
                raise BenchError(f"the lag sampler failed: {self.failure!r}")
            if not worker.running():
                raise BenchError(f"the projection worker stopped:\n{worker.log_tail()}")
            for _before, after, _head, tracked in list(self.samples):
                if tracked >= target:
                    return max(after - since, 0.0)
            time.sleep(self.interval)
        raise BenchError(f"the projection worker was still behind {timeout:g} s after the load")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.failure is not None:
            raise BenchError(f"the lag sampler failed: {self.failure!r}")


def lag_figures(
    samples: list[tuple[float, float, int, int]], start: float, end: float
) -> dict[str, Any]:
    """Each sample's lag: from when its head was read until a position at least as far was."""
    tracked = [s[3] for s in samples]  # never decreases: the position only moves forward
    lags: list[float] = []
    series: dict[str, list[Any]] = {"t_s": [], "lag_s": [], "head": [], "position": []}
    unresolved = 0
    for index, (before, _after, head, position) in enumerate(samples):
        if not start <= before < end:
            continue
        reached = bisect.bisect_left(tracked, head, lo=index)
        if reached < len(samples):
            lags.append(samples[reached][1] - before)
        else:  # never reached while sampled: counted at least as long as it was watched
            unresolved += 1
            lags.append(samples[-1][1] - before)
        for key, item in zip(series, (before - start, lags[-1], head, position), strict=True):
            series[key].append(round(item, 3) if isinstance(item, float) else item)
    inside = [s for s in samples if start <= s[0] < end]
    seconds = inside[-1][0] - inside[0][0] if len(inside) > 1 else math.nan
    return {
        "worker_lag_samples": len(lags),
        "worker_lag_unresolved": unresolved,
        "worker_lag_p50_s": round(percentile(lags, 50), 3),
        "worker_lag_p90_s": round(percentile(lags, 90), 3),
        "worker_lag_p99_s": round(percentile(lags, 99), 3),
        "worker_lag_max_s": round(max(lags, default=math.nan), 3),
        "worker_lag_mean_s": round(statistics.fmean(lags), 3) if lags else math.nan,
        "writers_events_per_s": (
            round((inside[-1][2] - inside[0][2]) / seconds, 1) if seconds > 0 else math.nan
        ),
        "worker_events_per_s": (
            round((inside[-1][3] - inside[0][3]) / seconds, 1) if seconds > 0 else math.nan
        ),
        "worker_lag_series": series,  # every sample of the window (kept in the phase only)
    }


# ---------------------------------------------------------------------------- the clients


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
        status, answer = client.call("POST", "/v1/purchases", body)
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


CLIENTS: dict[str, Callable[[dict[str, Any], Callable[[], None]], dict[str, Any]]] = {
    "enrol": enrol_client,
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
    on_start: Callable[[], None] | None = None,
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


# ------------------------------------------------------------------------------ statistics


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def in_window(result: dict[str, Any], start: float, end: float) -> list[float]:
    return [
        lat
        for s, lat in zip(result["starts"], result["latencies"], strict=True)
        if start <= s < end
    ]


def completed_in_window(result: dict[str, Any], start: float, end: float) -> int:
    return sum(
        1
        for s, lat in zip(result["starts"], result["latencies"], strict=True)
        if start <= s + lat < end
    )


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


# ---------------------------------------------------------------------------------- phases


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


def load_phase(
    args: argparse.Namespace, server: Server, key: str, run_id: str, url: str
) -> dict[str, Any]:
    members = [f"bench-{run_id}-m{i}" for i in range(args.members)]
    seconds = enrol(server.port, key, members, args.clients)
    log(f"enrolled {len(members)} members in {seconds:.1f} s")
    common = {"port": server.port, "key": key, "member_ids": members, "warmup": args.warmup,
              "duration": args.duration}  # fmt: skip
    jobs = [
        ("load", {**common, "seed": i, "order_prefix": f"{run_id}-L{i}"})
        for i in range(args.clients)
    ]
    jobs.append(("status", {**common, "seed": 10_000, "rate": args.status_rate}))
    lag: dict[str, Any] = {}
    extra: dict[str, list[int]] = {}
    started: list[float] = []
    with ExitStack() as stack:
        if args.worker_lag:
            events = events_table(url)
            worker = ProjectionWorkerProcess(url, args.worker_poll)
            worker.start()
            stack.callback(worker.stop)
            positions = LogPositions(url, events)
            stack.callback(positions.close)
            caught_up = positions.wait_caught_up(worker, timeout=300)
            log(f"projection worker (pid {worker.pid}) caught up in {caught_up:.1f} s; "
                f"sampling its lag every {args.lag_interval:g} s")  # fmt: skip
            sampler = LagSampler(url, events, args.lag_interval).start()
            stack.callback(sampler.stop)
            extra["projection_worker"] = [worker.pid]
        log(f"load: {args.clients} purchase clients + 1 status reader at {args.status_rate:g}/s, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured")  # fmt: skip
        extra["bench"] = [os.getpid()]  # the lag sampler's thread
        cpu = CpuMeter(server, extra)

        def on_start() -> None:
            started.append(time.monotonic())
            cpu.start()

        results = run_clients(jobs, timeout=args.warmup + args.duration + 300, on_start=on_start)
        cpu.stop()
        if args.worker_lag:
            load_end = time.monotonic()
            drained = sampler.wait_caught_up(load_end, worker, timeout=300)
            sampler.stop()
            code = worker.stop()
            window_start = started[0] + args.warmup
            lag = {
                **lag_figures(sampler.samples, window_start, window_start + args.duration),
                "worker_catch_up_before_load_s": round(caught_up, 2),
                "worker_caught_up_after_load_s": round(drained, 3),
                "worker_exit_code": code,
                "worker_lag_interval_s": args.lag_interval,
                "worker_poll_s": args.worker_poll,
            }
            if code != 0:
                log(f"WARNING: the projection worker exited with {code}:\n{worker.log_tail()}")
            worker.log_path.unlink(missing_ok=True)
    purchases, status = results[:-1], results[-1]
    require_no_errors(results, "load phase")
    window = (args.warmup, args.warmup + args.duration)
    latencies = [lat for r in purchases for lat in in_window(r, *window)]
    completed = sum(completed_in_window(r, *window) for r in purchases)
    reads = in_window(status, *window)
    client_cores = sum(r["cpu"] for r in results) / (args.warmup + args.duration)
    busy_cores = cpu.result["machine_busy_fraction"] * (os.cpu_count() or 1)
    others = busy_cores - client_cores - cpu.result["api_workers_cores"]
    others -= cpu.result["postgres_cores"] + cpu.result.get("projection_worker_cores", 0.0)
    others -= cpu.result["bench_cores"]
    if others > 0.25:
        log(f"WARNING: other processes used {others:.2f} cores during the load: figures are low")
    return {
        "enrol_seconds": round(seconds, 2),
        "purchases_per_s": round(completed / args.duration, 1),
        "purchases_measured": len(latencies),
        "purchase_p50_ms": ms(percentile(latencies, 50)),
        "purchase_p90_ms": ms(percentile(latencies, 90)),
        "purchase_p99_ms": ms(percentile(latencies, 99)),
        "purchase_max_ms": ms(max(latencies, default=math.nan)),
        "status_reads_measured": len(reads),
        "status_read_p50_ms": ms(percentile(reads, 50)),
        "status_read_p99_ms": ms(percentile(reads, 99)),
        "status_read_max_ms": ms(max(reads, default=math.nan)),
        "reconnects": sum(r.get("reconnects", 0) for r in purchases),
        **lag,
        "cpu": {
            **cpu.result,
            "load_clients_cores": round(client_cores, 2),
            "other_processes_cores": round(others, 2),
        },
    }


def events_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables shaped like the event store's (a notification id and a state), by name."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name IN ('notification_id', 'state') AND table_name <> %s "
        "GROUP BY table_name HAVING count(*) = 2 ORDER BY table_name",
        (RAW_TABLE,),
    ).fetchall()
    return [str(table) for (table,) in rows]


def events_table(url: str) -> str:
    """The ledger's events table (the view's tracking table has a notification id but no state)."""
    with psycopg.connect(url) as conn:
        tables = events_tables(conn)
    if len(tables) != 1:
        raise BenchError(f"expected one events table in the bench database, found {tables}")
    return tables[0]


def stored_event_size(url: str) -> tuple[int, str]:
    """Average size of a stored event's state in the ledger's events table (and the table)."""
    with psycopg.connect(url) as conn:
        for table in events_tables(conn):
            row = conn.execute(
                sql.SQL("SELECT avg(octet_length(state))::int FROM {}").format(
                    sql.Identifier(table)
                )
            ).fetchone()
            if row and row[0]:
                return int(row[0]), str(table)
    return 500, "(none found: 500 bytes assumed)"


def raw_phase(args: argparse.Namespace, url: str) -> dict[str, Any]:
    size, table = stored_event_size(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # The shape of eventsourcing.postgres's application recorder table.
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "topic text, state bytea, notification_id bigserial, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(sql.Identifier(RAW_TABLE))
        )
        conn.execute(
            sql.SQL("CREATE UNIQUE INDEX {} ON {} (notification_id ASC)").format(
                sql.Identifier(f"{RAW_TABLE}_notification_id_idx"), sql.Identifier(RAW_TABLE)
            )
        )
    log(f"raw: {args.raw_writers} writers, one-row INSERT + COMMIT of {size}-byte states "
        f"(the average in {table}) for {args.raw_duration:g} s")  # fmt: skip
    spec = {"url": url, "duration": args.raw_duration, "state_bytes": size}
    results = run_clients([("raw", spec)] * args.raw_writers, timeout=args.raw_duration + 120)
    inserts = sum(r["ok"] for r in results)
    figures: dict[str, Any] = {
        "raw_inserts_per_s": round(inserts / args.raw_duration, 1),
        "raw_state_bytes": size,
    }
    if args.raw_locked:
        log(f"raw, locked: the same with LOCK TABLE ... IN EXCLUSIVE MODE in each transaction "
            f"(lock + INSERT + COMMIT in one pipeline) for {args.raw_duration:g} s")  # fmt: skip
        locked = {**spec, "locked": True}
        results = run_clients([("raw", locked)] * args.raw_writers, timeout=args.raw_duration + 120)
        figures["raw_locked_inserts_per_s"] = round(
            sum(r["ok"] for r in results) / args.raw_duration, 1
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(RAW_TABLE)))
    return figures


def long_history_phase(
    args: argparse.Namespace, server: Server, key: str, run_id: str
) -> dict[str, Any]:
    """Sequential purchases on one connection: the long member's against new members'."""
    client = Client(server.port, key)
    rng = random.Random(42)
    sequence = 0

    def enrol_one(member_id: str) -> None:
        body = {"member_id": member_id, "email": f"{member_id}@bench.example"}
        status, answer = client.call("POST", "/v1/members", body)
        if status not in (200, 201):
            raise BenchError(f"enrol {member_id}: {status} {answer[:300]!r}")

    def purchase(member_id: str) -> tuple[float, dict[str, Any]]:
        nonlocal sequence
        sequence += 1
        body = purchase_body(f"{run_id}-H{sequence}", member_id, rng)
        began = time.perf_counter()
        status, answer = client.call("POST", "/v1/purchases", body)
        took = time.perf_counter() - began
        if status not in (200, 201):
            raise BenchError(f"purchase for {member_id}: {status} {answer[:300]!r}")
        return took, json.loads(answer)

    long_member = f"bench-{run_id}-long"
    enrol_one(long_member)
    events = 1
    log(f"long history: building {long_member} up to {args.long_events} events")
    started = time.monotonic()
    build: list[float] = []
    while events < args.long_events:
        took, answer = purchase(long_member)
        build.append(took)
        events += 2 if answer.get("tier_changed") else 1
        if len(build) % 1000 == 0:
            log(f"  {events} events, {len(build) / (time.monotonic() - started):.0f} purchases/s")
    build_seconds = time.monotonic() - started

    new_members = [f"bench-{run_id}-new{i}" for i in range(10)]
    for member_id in new_members:
        enrol_one(member_id)
        for _ in range(3):  # warm: in the worker's cache, like the long member
            purchase(member_id)
    for _ in range(3):
        purchase(long_member)
    long_times: list[float] = []
    new_times: list[float] = []
    for i in range(args.long_samples):
        pair = [(long_member, long_times), (new_members[i % len(new_members)], new_times)]
        for member_id, times in pair if i % 2 == 0 else pair[::-1]:
            times.append(purchase(member_id)[0])
    long_median = statistics.median(long_times)
    new_median = statistics.median(new_times)
    return {
        "long_history_events": events,
        "long_history_build_seconds": round(build_seconds, 1),
        "long_history_build_purchases_per_s": round(len(build) / build_seconds, 1),
        "long_history_build_last1000_median_ms": ms(statistics.median(build[-1000:])),
        "long_history_build_first1000_median_ms": ms(statistics.median(build[:1000])),
        "long_purchase_median_ms": ms(long_median),
        "long_purchase_p90_ms": ms(percentile(long_times, 90)),
        "long_purchase_max_ms": ms(max(long_times)),
        "new_purchase_median_ms": ms(new_median),
        "new_purchase_p90_ms": ms(percentile(new_times, 90)),
        "new_purchase_max_ms": ms(max(new_times)),
        "long_history_ratio": round(long_median / new_median, 3),
    }


def memory_phase(args: argparse.Namespace, server: Server, key: str, run_id: str) -> dict[str, Any]:
    prefix = f"bench-{run_id}-x"
    members = [f"{prefix}{i}" for i in range(args.memory_members)]
    log(f"memory: enrolling {len(members)} members, then {args.memory_purchases} purchases "
        f"with {args.memory_clients} clients")  # fmt: skip
    started = time.monotonic()
    enrol_seconds = enrol(server.port, key, members, args.memory_clients)
    log(f"  enrolled in {enrol_seconds:.1f} s; posting purchases")
    purchases_started = time.monotonic()
    jobs = [
        (
            "bulk",
            {
                "port": server.port,
                "key": key,
                "seed": 100 + i,
                "first": i,
                "step": args.memory_clients,
                "total": args.memory_purchases,
                "members": args.memory_members,
                "member_prefix": prefix,
                "order_prefix": f"{run_id}-M",
            },
        )
        for i in range(args.memory_clients)
    ]
    cpu = CpuMeter(server)
    results = run_clients(jobs, timeout=3600 + args.memory_purchases / 20, on_start=cpu.start)
    cpu.stop()
    require_no_errors(results, "memory phase")
    purchase_seconds = time.monotonic() - purchases_started
    memory = server.memory()
    return {
        "memory_phase_seconds": round(time.monotonic() - started, 1),
        "memory_enrol_seconds": round(enrol_seconds, 1),
        "memory_purchase_seconds": round(purchase_seconds, 1),
        "memory_purchases_per_s": round(args.memory_purchases / purchase_seconds, 1),
        "memory_cpu": cpu.result,
        **memory,
    }


def count_events(url: str, table: str) -> tuple[int, int]:
    """(events, largest notification id) of the events table."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def top_up_phase(
    args: argparse.Namespace, server: Server, key: str, run_id: str, url: str
) -> dict[str, Any]:
    """Purchases for the load phase's members until the log has ``--replay-min-events``."""
    table = events_table(url)
    have, _ = count_events(url, table)
    had = have
    started = time.monotonic()
    posted = 0
    rounds = 0
    while have < args.replay_min_events:
        rounds += 1
        if rounds > 5:
            raise BenchError(f"{have} events after {posted} more purchases: the log does not grow")
        # A purchase records one event or more (about two): half the shortfall first, then
        # as many as the rate seen so far says.
        shortfall = args.replay_min_events - have
        per_purchase = (have - had) / posted if posted else 2.0
        missing = max(math.ceil(shortfall / max(per_purchase, 1.0)), 1)
        log(f"bulk: {have:,} events recorded; posting {missing:,} purchases with "
            f"{args.bulk_clients} clients")  # fmt: skip
        jobs = [
            (
                "bulk",
                {
                    "port": server.port,
                    "key": key,
                    "seed": 1000 * rounds + i,
                    "first": i,
                    "step": args.bulk_clients,
                    "total": missing,
                    "members": args.members,
                    "member_prefix": f"bench-{run_id}-m",
                    "order_prefix": f"{run_id}-B{rounds}",
                },
            )
            for i in range(args.bulk_clients)
        ]
        results = run_clients(jobs, timeout=3600 + missing / 20)
        require_no_errors(results, "bulk phase")
        posted += missing
        have, _ = count_events(url, table)
    seconds = time.monotonic() - started
    return {
        "bulk_purchases": posted,
        "bulk_events": have - had,
        "bulk_seconds": round(seconds, 1),
        "bulk_purchases_per_s": round(posted / seconds, 1) if posted else None,
    }


def raw_scan(url: str, table: str, page: int) -> dict[str, Any]:
    """Every row of the events table, every column, in notification order, through psycopg
    with a server-side cursor: what a reader pays before it does anything with the rows."""
    statement = sql.SQL(
        "SELECT originator_id, originator_version, topic, state, notification_id FROM {} "
        "ORDER BY notification_id"
    ).format(sql.Identifier(table))
    rows = 0
    state_bytes = 0
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor(name="bench_raw_scan") as cursor:
            cursor.execute(statement)
            while batch := cursor.fetchmany(page):
                rows += len(batch)
                state_bytes += sum(len(row[3]) for row in batch)
        seconds = time.perf_counter() - started
        conn.rollback()
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
        "state_mb": round(state_bytes / 2**20, 1),
    }


def replay_phase(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """``daifuku replay`` of the whole log, between two raw scans of the events table."""
    table = events_table(url)
    events, head = count_events(url, table)
    log(f"replay: raw scan of {events:,} events in {table} (pages of {args.raw_scan_page})")
    before = raw_scan(url, table, args.raw_scan_page)
    log(f"  {before['rows_per_s']:,.0f} rows/s; `daifuku replay`")
    env = {**os.environ, "DAIFUKU_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    machine0 = machine_ticks()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [str(BIN / "daifuku"), "replay"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=3600 + events / 100,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"`daifuku replay` did not finish: {error}") from error
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Its PostgreSQL backend has exited with it, so the machine's busy time stands for both.
    ticks = [b - a for a, b in zip(machine0, machine_ticks(), strict=False)]
    busy_cores = (1 - (ticks[3] + ticks[4]) / max(sum(ticks), 1)) * (os.cpu_count() or 1)
    replay_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise BenchError(f"`daifuku replay` exited with {done.returncode}:\n{output[-3000:]}")
    found = re.search(r"Replayed (\d+) events .*\(([\d,.]+)/s\)", done.stdout)
    replayed = int(found.group(1)) if found else None
    reported = float(found.group(2).replace(",", "")) if found else None
    if replayed != events:
        log(f"WARNING: the table holds {events} events, `daifuku replay` reports {replayed}")
    positions = LogPositions(url, table)
    try:
        _, position = positions.read()
    finally:
        positions.close()
    if position != head:
        log(f"WARNING: after the replay the view is at {position}, the log's head is {head}")
    log(f"  replayed {replayed} events in {seconds:.1f} s; raw scan again")
    after = raw_scan(url, table, args.raw_scan_page)
    raw_rate = max(before["rows_per_s"], after["rows_per_s"])
    rate = events / seconds
    return {
        "replay_events": events,
        "replay_seconds": round(seconds, 2),
        "replay_events_per_s": round(rate, 1),
        "replay_reported_events_per_s": reported,
        "replay_process_cores": round(replay_cpu / seconds, 2),
        "replay_machine_busy_cores": round(busy_cores, 2),
        "replay_view_position": position,
        "replay_log_head": head,
        "raw_scan_rows_per_s": raw_rate,
        "raw_scan_rows_per_s_before": before["rows_per_s"],
        "raw_scan_rows_per_s_after": after["rows_per_s"],
        "raw_scan_seconds": min(before["seconds"], after["seconds"]),
        "raw_scan_state_mb": before["state_mb"],
        "replay_ratio": round(rate / raw_rate, 4),
        "replay_output_tail": output.splitlines()[-3:],
    }


# ------------------------------------------------------------------------------ reporting


def verdicts(figures: dict[str, Any], skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Pass or fail per target; ``skipped`` names the targets whose phase was skipped."""
    out = {}
    for name, (op, target) in TARGETS.items():
        value = figures.get(name)
        if name in skipped:
            verdict = skipped[name]
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            verdict = "not measured"
        else:
            passed = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
            verdict = "pass" if passed else "FAIL"
        out[name] = {"value": value, "target": f"{op} {target:g}", "verdict": verdict}
    return out


def print_table(figures: dict[str, Any], checks: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("purchases/s (8 clients)", "purchases_per_s"),
        ("purchase p50 ms", "purchase_p50_ms"),
        ("purchase p99 ms", "purchase_p99_ms"),
        ("raw INSERT+COMMIT/s", "raw_inserts_per_s"),
        ("ratio purchases/raw", "ratio"),
        ("raw locked INSERT+COMMIT/s", "raw_locked_inserts_per_s"),
        ("status read p99 ms (under load)", "status_read_p99_ms"),
        ("long-history purchase median ms", "long_purchase_median_ms"),
        ("new-member purchase median ms", "new_purchase_median_ms"),
        ("long-history ratio", "long_history_ratio"),
        ("peak RSS MiB (gunicorn workers)", "peak_rss_mb"),
        ("memory phase seconds", "memory_phase_seconds"),
        ("worker lag p50 s (under load)", "worker_lag_p50_s"),
        ("worker lag p99 s (under load)", "worker_lag_p99_s"),
        ("events replayed", "replay_events"),
        ("replay events/s", "replay_events_per_s"),
        ("raw scan rows/s", "raw_scan_rows_per_s"),
        ("ratio replay/raw scan", "replay_ratio"),
    ]
    print()
    print(f"{'metric':<34} {'value':>12}  {'target':<10} verdict")
    print("-" * 72)
    for label, name in rows:
        value = figures.get(name)
        shown = (
            "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        )
        check = checks.get(name, {})
        print(f"{label:<34} {shown:>12}  {check.get('target', ''):<10} {check.get('verdict', '')}")
    print()


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def source_digest() -> str:
    """SHA-256 (12 hex) of the code the server runs: domain/, adapters/ and api/ as on disk."""
    digest = hashlib.sha256()
    for path in sorted(p for d in ("domain", "adapters", "api") for p in (ROOT / d).glob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{unquote(parts.username or '')}:***@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# ------------------------------------------------------------------------------------ main


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_phases(
    args: argparse.Namespace,
    server: Server,
    url: str,
    key: str,
    run_id: str,
    figures: dict[str, Any],
    phases: dict[str, Any],
) -> None:
    rss = phases.setdefault("workers_rss_after", {})
    phases["load"] = load_phase(args, server, key, run_id, url)
    rss["load"] = server.memory()["per_worker"]
    figures.update({k: v for k, v in phases["load"].items() if not isinstance(v, dict)})
    log(
        f"  {figures['purchases_per_s']} purchases/s, p50 {figures['purchase_p50_ms']} ms, "
        f"p99 {figures['purchase_p99_ms']} ms; status p99 {figures['status_read_p99_ms']} ms"
    )
    if args.worker_lag:
        log(
            f"  projection worker lag p50 {figures['worker_lag_p50_s']} s, p99 "
            f"{figures['worker_lag_p99_s']} s, max {figures['worker_lag_max_s']} s "
            f"({figures['worker_events_per_s']} events/s projected, "
            f"{figures['writers_events_per_s']} recorded)"
        )

    phases["raw"] = raw_phase(args, url)
    figures.update(phases["raw"])
    figures["ratio"] = round(figures["purchases_per_s"] / figures["raw_inserts_per_s"], 3)
    log(f"  {figures['raw_inserts_per_s']} inserts/s; ratio {figures['ratio']}")
    if args.raw_locked:
        figures["ratio_to_locked"] = round(
            figures["purchases_per_s"] / figures["raw_locked_inserts_per_s"], 3
        )
        log(f"  locked: {figures['raw_locked_inserts_per_s']} inserts/s; purchases/s over it "
            f"{figures['ratio_to_locked']}")  # fmt: skip

    phases["long_history"] = long_history_phase(args, server, key, run_id)
    rss["long_history"] = server.memory()["per_worker"]
    figures.update(phases["long_history"])
    log(
        f"  long {figures['long_purchase_median_ms']} ms vs new "
        f"{figures['new_purchase_median_ms']} ms: ratio {figures['long_history_ratio']}"
    )

    if args.memory_phase:
        phases["memory"] = memory_phase(args, server, key, run_id)
        figures.update({k: v for k, v in phases["memory"].items() if not isinstance(v, dict)})
    else:
        phases["memory"] = server.memory()
    figures["peak_rss_mb"] = phases["memory"]["workers_peak_mb"]
    log(f"  peak RSS of the workers {figures['peak_rss_mb']} MiB")

    if args.replay_phase:
        phases["bulk"] = top_up_phase(args, server, key, run_id, url)
        figures.update(phases["bulk"])
        phases["replay"] = replay_phase(args, url)
        figures.update({k: v for k, v in phases["replay"].items() if not isinstance(v, list)})
        log(
            f"  replay {figures['replay_events_per_s']:,.0f} events/s, raw scan "
            f"{figures['raw_scan_rows_per_s']:,.0f} rows/s: ratio {figures['replay_ratio']}"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    run_id = secrets.token_hex(3)
    figures: dict[str, Any] = {}
    phases: dict[str, Any] = {}
    config: dict[str, Any] = {
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": args.worker_class,
        "clients": args.clients,
        "members": args.members,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "status_rate_per_s": args.status_rate,
        "raw_writers": args.raw_writers,
        "raw_duration_s": args.raw_duration,
        "raw_locked": args.raw_locked,
        "long_events": args.long_events,
        "long_samples": args.long_samples,
        "memory_phase": args.memory_phase,
        "memory_members": args.memory_members,
        "memory_purchases": args.memory_purchases,
        "memory_clients": args.memory_clients,
        "worker_lag": args.worker_lag,
        "lag_interval_s": args.lag_interval,
        "worker_poll_s": args.worker_poll,
        "replay_phase": args.replay_phase,
        "replay_min_events": args.replay_min_events,
        "bulk_clients": args.bulk_clients,
        "raw_scan_page": args.raw_scan_page,
        "cpus": os.cpu_count(),
        "revision": git_revision(),
        "source_sha256": source_digest(),
        "server_env": {  # what the server inherits that changes its behaviour
            k: v
            for k, v in os.environ.items()
            if k.startswith(PASSED_ENV_PREFIXES) and k != ENV_URL
        },
    }
    config["machine_busy_before"] = machine_busy(2.0)
    if config["machine_busy_before"] > 0.15:
        log(
            f"WARNING: the machine is already {config['machine_busy_before']:.0%} busy; "
            f"the figures will be lower than on a quiet machine"
        )
    with ExitStack() as stack:
        admin_url, how = stack.enter_context(postgres_server(args.database_url))
        log(f"PostgreSQL: {how}")
        url = stack.enter_context(bench_database(admin_url, args.keep_database))
        config["postgres"] = {"found": how, "admin_url": redact(admin_url), **server_facts(url)}
        key, key_source = create_storefront_key(url)
        config["key_created_by"] = key_source
        server = Server(url, args.workers, args.threads, args.worker_class, args.gunicorn_args)
        stack.callback(server.stop)
        prepare_schema(url)
        log(f"gunicorn: {args.workers} workers x {args.threads} threads ({args.worker_class})")
        server.start()
        config["server_command"] = " ".join(server.command()[1:])
        log(f"API on 127.0.0.1:{server.port} (workers {server.worker_pids()})")
        try:
            run_phases(args, server, url, key, run_id, figures, phases)
        except BenchError as error:
            if not server.running():
                raise BenchError(f"{error}\nthe API server died:\n{server.log_tail()}") from error
            raise BenchError(f"{error}\n(the server's log: {server.log_path})") from error
    server.log_path.unlink(missing_ok=True)  # kept only when the run failed
    finished_at = datetime.now(UTC)
    skipped: dict[str, str] = {}
    if not args.memory_phase:
        skipped["peak_rss_mb"] = SKIPPED_MEMORY
    if not args.replay_phase:
        skipped["replay_events_per_s"] = skipped["replay_ratio"] = SKIPPED_REPLAY
    if not args.worker_lag:
        skipped["worker_lag_p99_s"] = SKIPPED_LAG
    checks = verdicts(figures, skipped)
    return {
        "purchases_per_s": figures.get("purchases_per_s"),
        "purchase_p50_ms": figures.get("purchase_p50_ms"),
        "purchase_p99_ms": figures.get("purchase_p99_ms"),
        "raw_inserts_per_s": figures.get("raw_inserts_per_s"),
        "ratio": figures.get("ratio"),
        "status_read_p99_ms": figures.get("status_read_p99_ms"),
        "long_history_ratio": figures.get("long_history_ratio"),
        "peak_rss_mb": figures.get("peak_rss_mb"),
        "replay_events_per_s": figures.get("replay_events_per_s"),
        "replay_ratio": figures.get("replay_ratio"),
        "worker_lag_p99_s": figures.get("worker_lag_p99_s"),
        "targets": checks,
        "passed": all(c["verdict"] == "pass" or c["verdict"] in skipped.values()
                      for c in checks.values()),
        "figures": figures,
        "phases": phases,
        "config": config,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "seconds": round((finished_at - started_at).total_seconds(), 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run(args)
    except BenchError as error:
        log(f"bench failed: {error}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        return 130
    finally:
        stop_children()
    print_table(report["figures"], report["targets"])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2, default=str) + "\n")
    outcome = "all targets met" if report["passed"] else "targets MISSED"
    log(f"results written to {args.results}; {outcome}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
