"""The projection worker (``daifuku project``) beside the load, and how far it lags behind the
writers (how far any follower of the log does: the follow-up process too, bench/followups.py)."""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from bench.common import BIN, BenchError, log, spawn
from bench.stats import percentile


class ProjectionWorkerProcess:
    """``daifuku project`` against the bench database, in its own session."""

    def __init__(
        self, database_url: str, poll: float, env: dict[str, str] | None = None, name: str = ""
    ) -> None:
        self.database_url = database_url
        self.poll = poll
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        tag = f"-{name}" if name else ""
        self.log_path = Path(f"/tmp/daifuku-bench-project{tag}-{os.getpid()}.log")

    def start(self) -> None:
        env = {**os.environ, "DAIFUKU_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1",
               **self.env}  # fmt: skip
        command = [str(BIN / "daifuku"), "project", "--poll", f"{self.poll:g}"]
        self.process = spawn(command, self.log_path, env)

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


class Follower(Protocol):
    """The process that moves a position along the log (a projection worker, a server)."""

    def running(self) -> bool: ...

    def log_tail(self, size: int = 3000) -> str: ...


class LogPositions:
    """The head of the event log and a follower's position, in one statement: the
    member-status view's here (``tracked`` and ``key``: its position's query and parameter)."""

    follower = "the projection worker"

    def __init__(self, url: str, events: str) -> None:
        from adapters.views import TRACKING_TABLE  # noqa: PLC0415
        from domain.ledger import Ledger  # noqa: PLC0415

        self.conn = psycopg.connect(url, autocommit=True)
        self.key = Ledger.name
        tracked = sql.SQL("SELECT max(notification_id) FROM {} WHERE application_name = %s")
        self.statement = self.statement_of(events, tracked.format(sql.Identifier(TRACKING_TABLE)))

    @staticmethod
    def statement_of(events: str, tracked: sql.Composable) -> sql.Composed:
        return sql.SQL("SELECT (SELECT max(notification_id) FROM {0}), ({1})").format(
            sql.Identifier(events), tracked
        )

    def read(self) -> tuple[int, int]:
        """(head, tracked): 0 for an empty log or a view that has tracked nothing yet."""
        row = self.conn.execute(self.statement, (self.key,), prepare=True).fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    def wait_caught_up(self, worker: Follower, timeout: float) -> float:
        """Seconds until the position reaches the head (its table may not exist yet)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not worker.running():
                raise BenchError(f"{self.follower} stopped:\n{worker.log_tail()}")
            try:
                head, tracked = self.read()
            except psycopg.errors.UndefinedTable:
                pass  # the follower has not created its tables yet
            else:
                if tracked >= head:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise BenchError(
            f"{self.follower} did not catch up within {timeout:g} s:\n{worker.log_tail()}"
        )

    def close(self) -> None:
        self.conn.close()


class LagSampler:
    """(before, after, head, tracked) every ``interval`` seconds, from a thread of its own.

    ``before`` and ``after`` are the monotonic times around the statement: a head is dated
    ``before`` (it was read no earlier) and a position ``after`` (it was read no later), so a
    lag computed from them is never less than the real one.
    """

    def __init__(
        self,
        url: str,
        events: str,
        interval: float,
        positions: Callable[[str, str], LogPositions] = LogPositions,
    ) -> None:
        self.url = url
        self.events = events
        self.interval = interval
        self.positions = positions
        self.samples: list[tuple[float, float, int, int]] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            positions = self.positions(self.url, self.events)
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

    def wait_caught_up(self, since: float, worker: Follower, timeout: float) -> float:
        """Seconds after ``since`` until the position reached the head read at ``since``."""
        target = max((s[2] for s in self.samples if s[0] <= since), default=0)
        while time.monotonic() - since < timeout:
            if self.failure is not None:
                raise BenchError(f"the lag sampler failed: {self.failure!r}")
            if not worker.running():
                raise BenchError(f"the follower of the log stopped:\n{worker.log_tail()}")
            for _before, after, _head, tracked in list(self.samples):
                if tracked >= target:
                    return max(after - since, 0.0)
            time.sleep(self.interval)
        raise BenchError(f"the follower of the log was still behind {timeout:g} s after the load")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.failure is not None:
            raise BenchError(f"the lag sampler failed: {self.failure!r}")


def lag_figures(
    samples: list[tuple[float, float, int, int]], start: float, end: float, name: str = "worker"
) -> dict[str, Any]:
    """Each sample's lag: from when its head was read until a position at least as far was;
    ``name`` begins the figures' names."""
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
        f"{name}_lag_samples": len(lags),
        f"{name}_lag_unresolved": unresolved,
        f"{name}_lag_p50_s": round(percentile(lags, 50), 3),
        f"{name}_lag_p90_s": round(percentile(lags, 90), 3),
        f"{name}_lag_p99_s": round(percentile(lags, 99), 3),
        f"{name}_lag_max_s": round(max(lags, default=math.nan), 3),
        f"{name}_lag_mean_s": round(statistics.fmean(lags), 3) if lags else math.nan,
        "writers_events_per_s": (
            round((inside[-1][2] - inside[0][2]) / seconds, 1) if seconds > 0 else math.nan
        ),
        f"{name}_events_per_s": (
            round((inside[-1][3] - inside[0][3]) / seconds, 1) if seconds > 0 else math.nan
        ),
        f"{name}_lag_series": series,  # every sample of the window (kept in the phase only)
    }
