"""The API under gunicorn on a free port of 127.0.0.1, its storefront key and its memory.

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
a third between runs of one configuration that day. On 2026-12-01 (a full run on a machine
shared with other test runs) the same 2x8 gave 547 purchases/s at 1.87 ms of worker CPU each,
against 2,548 requests/s and 0.36 ms for the trivial Flask endpoint (``bench.ceiling_app``) and
2,320 and 0.45 ms through flask-smorest and marshmallow: the web stack is about a fifth of a
purchase's CPU, the framework layers about a quarter.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, ROOT, BenchError, log, spawn
from devtools.postgres import free_port


def create_storefront_key(
    database_url: str, role: str = "storefront", env_extra: dict[str, str] | None = None
) -> tuple[str, str]:
    """A key of ``role`` (a storefront's by default) and how it was made: the command line
    first, the KeyStore otherwise."""
    env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url, **(env_extra or {})}
    command = [str(BIN / "daifuku"), "keys", "create", "--role", role, "--name", "bench"]
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
        return store.create(role, "bench"), "adapters.keys.KeyStore"
    finally:
        store.close()


def prepare_schema(database_url: str) -> None:
    """Create the event store's tables once, before the workers start.

    Two workers starting at once on an empty database both run CREATE TABLE IF NOT EXISTS and
    one of them can fail with a duplicate pg_type, which stops gunicorn; doing it here first
    keeps the bench from depending on that race.
    """
    from adapters.settings import Database  # noqa: PLC0415
    from adapters.views import open_member_status_view  # noqa: PLC0415
    from domain.ledger import Ledger  # noqa: PLC0415

    ledger = Ledger(env=Database.from_url(database_url).event_store_env(pool_size=1))
    try:
        open_member_status_view(ledger.env).close()  # the read models' tables: the same race
    finally:
        ledger.close()


class Server:
    """The API under gunicorn, in its own session so that it is stopped as a whole; ``app`` is
    the WSGI application (``bench.ceiling_app:app`` for the ceiling of the stack), ``env``
    more variables for it, ``name`` a tag in its log's name."""

    def __init__(
        self,
        database_url: str,
        workers: int,
        threads: int,
        worker_class: str,
        extra_args: str = "",
        app: str = "api.wsgi:app",
        env: dict[str, str] | None = None,
        name: str = "",
    ) -> None:
        self.database_url = database_url
        self.app = app
        self.env = env or {}
        self.extra_args = extra_args
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        tag = f"-{name}" if name else ""
        self.log_path = Path(f"/tmp/daifuku-bench-gunicorn{tag}-{os.getpid()}.log")

    def command(self) -> list[str]:
        return [
            str(BIN / "gunicorn"),
            "--config", "python:api.gunicorn_config",  # /metrics of every worker, as deployed
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--worker-class", self.worker_class,
            "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "120",
            "--graceful-timeout", "10",
            "--log-level", "warning",
            "--error-logfile", "-",
            *shlex.split(self.extra_args),
            self.app,
        ]  # fmt: skip

    def start(self) -> None:
        env = {**os.environ, "DAIFUKU_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1",
               **self.env}  # fmt: skip
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            self.process = spawn(self.command(), self.log_path, env, mode="ab")
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


class ServeServer(Server):
    """``daifuku serve``: the API under gunicorn with its background work (scheduler, projection,
    webhook dispatcher, follow-up process) in gunicorn's dirty worker, as deployed. Its
    children: the HTTP workers and the dirty arbiter, whose one child is the dirty worker."""

    def __init__(
        self, database_url: str, workers: int, threads: int, env: dict[str, str], name: str
    ) -> None:
        super().__init__(database_url, workers, threads, "gthread", env=env, name=name)

    def command(self) -> list[str]:
        return [
            str(BIN / "daifuku"), "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--threads", str(self.threads),
        ]  # fmt: skip

    def worker_pids(self) -> list[int]:
        """The HTTP workers (the children with none of their own)."""
        return [pid for pid in super().worker_pids() if not children_of(pid)]

    def background_pids(self) -> list[int]:
        """The dirty worker (the dirty arbiter's child)."""
        return [pid for child in super().worker_pids() for pid in children_of(child)]

    def wait_background(self, timeout: float = 60.0) -> str:
        """The background work's line saying what it started, once it is logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in reversed(self.log_tail(20_000).splitlines()):
                if "background work started:" in line:
                    return line.split("background work started:", 1)[1].strip()
            if not self.running():
                break
            time.sleep(0.2)
        raise BenchError(f"`daifuku serve` started no background work:\n{self.log_tail()}")
