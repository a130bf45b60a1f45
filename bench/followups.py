"""The follow-up process beside the load: ``daifuku serve`` with ``DAIFUKU_FOLLOWUPS=on`` against
the same server with it ``off``, the load phase's purchase load on each.

The process runs only in ``daifuku serve``'s background work (api/background.py), which the
bench's main server (``gunicorn api.wsgi:app``) does not run; so each round here starts a
``daifuku serve`` of its own on the bench database (``--workers`` x ``--threads``; the
projection runs in its background work, so no ``daifuku project`` beside it), and stops it
after. ``--followup-rounds`` times the load without the process (A), then with it (B), then one
more A: A-B-A-B-A by default, over the load phase's members, so the machine's drift over the
run falls on both sides of the comparison, as in the webhook phase.

Two figures. Purchases/s with the process over purchases/s without it (``>= 0.9``: within the
noise). And the process's lag: every ``--lag-interval`` seconds of a B load the head of the log
and the process's tracking position (``daifuku_followup_tracking``) are read in one
statement; a sample's lag is the time until the position reached that head, p99 over the
measured windows (bench/worker_lag.py, as for the projection worker). Before each load the
server's followers (the read models; in a B round the process too) are waited for until they
have caught up with the log, so a B load does not carry the backlog of the A load before it;
that catch-up is reported apart. The dirty worker's CPU (all its background work) per event
recorded, with the process and without: the difference is what the process costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import BenchError, log
from bench.cpu import cpu_ticks
from bench.database import count_events, events_table
from bench.load import load_phase
from bench.server import ServeServer
from bench.stats import percentile
from bench.worker_lag import LagSampler, LogPositions, lag_figures

PROCESS_STARTED = "follow-up process"  # in the background work's "started" line


class FollowupPositions(LogPositions):
    """The head of the log and the follow-up process's tracking position."""

    follower = "the follow-up process"

    def __init__(self, url: str, events: str) -> None:
        from adapters.followup_process import NAME  # noqa: PLC0415

        self.conn = psycopg.connect(url, autocommit=True)
        self.key = NAME
        tracked = sql.SQL("SELECT position FROM daifuku_followup_tracking WHERE name = %s")
        self.statement = self.statement_of(events, tracked)


def followup_phase(args: argparse.Namespace, key: str, run_id: str, url: str) -> dict[str, Any]:
    """A, then ``--followup-rounds`` times B and A: the load with and without the process."""
    plain = argparse.Namespace(**{**vars(args), "worker_lag": False})
    events = events_table(url)
    rounds: list[dict[str, Any]] = []
    lags: list[float] = []
    order = [False] + [True, False] * args.followup_rounds
    for index, on in enumerate(order):
        found = _round(plain, key, run_id, url, events, on, index)
        lags.extend(found.pop("lags"))
        rounds.append(found)
        log(f"  follow-ups {'on ' if on else 'off'}: {found['purchases_per_s']} purchases/s"
            + (f"; lag p99 {found['lag_p99_s']} s, {found['followups_started']} started"
               if on else ""))  # fmt: skip
    with_process = [r["purchases_per_s"] for r in rounds if r["followups"]]
    without = [r["purchases_per_s"] for r in rounds if not r["followups"]]
    mean_with, mean_without = statistics.fmean(with_process), statistics.fmean(without)
    cpu_on = _cpu_ms_per_event([r for r in rounds if r["followups"]])
    cpu_off = _cpu_ms_per_event([r for r in rounds if not r["followups"]])
    first = next(r for r in rounds if r["followups"])
    return {
        "followup_purchases_per_s": round(mean_with, 1),
        "followup_rounds_purchases_per_s": with_process,
        "followup_anchor_purchases_per_s": without,
        "followup_purchases_ratio": round(mean_with / mean_without, 3),
        "followup_lag_samples": len(lags),
        "followup_lag_p50_s": round(percentile(lags, 50), 3),
        "followup_lag_p99_s": round(percentile(lags, 99), 3),
        "followup_lag_max_s": round(max(lags, default=float("nan")), 3),
        "followup_lag_unresolved": sum(r["lag_unresolved"] for r in rounds if r["followups"]),
        "followups_started_under_load": sum(r["followups_started"] for r in rounds),
        "followup_caught_up_after_load_s": max(r["caught_up_after_s"] for r in rounds),
        # The first B round's backlog: the log so far (the load phase's, the webhook rounds').
        "followup_catch_up_events": first["backlog_events"],
        "followup_catch_up_s": first["catch_up_s"],
        "followup_background_cpu_ms_per_event_on": cpu_on,
        "followup_background_cpu_ms_per_event_off": cpu_off,
        "followup_process_cpu_ms_per_event": round(cpu_on - cpu_off, 3),
        "followup_rounds": rounds,
    }


def _round(
    args: argparse.Namespace, key: str, run_id: str, url: str, events: str, on: bool, index: int
) -> dict[str, Any]:
    """One load on a ``daifuku serve`` of its own, the process ``on`` or not."""
    setting = "on" if on else "off"
    server = ServeServer(
        url, args.workers, args.threads, {"DAIFUKU_FOLLOWUPS": setting}, f"followups-{index}"
    )
    _, head = count_events(url, events)
    backlog = head - _position(url)
    started = time.monotonic()
    server.start()
    figures: dict[str, Any] = {"followups": on}
    try:
        loops = server.wait_background()
        if (PROCESS_STARTED in loops) is not on:
            raise BenchError(f"DAIFUKU_FOLLOWUPS={setting}, yet the background work runs {loops}")
        background = server.background_pids()
        _wait_followers(server, url, events, on)
        if on:  # from the server's start: at least as long as the catch-up took
            figures.update(backlog_events=backlog, catch_up_s=round(time.monotonic() - started, 2))
            sampler = LagSampler(url, events, args.lag_interval, FollowupPositions).start()
        followups_before = _followups_started(url)
        _, head = count_events(url, events)
        ticks = cpu_ticks(background)
        load_start = time.monotonic()
        loaded = load_phase(
            args, server, key, run_id, url, again=f"f{index}", processes={"background": background}
        )
        load_end = time.monotonic()
        if on:
            drained = sampler.wait_caught_up(load_end, server, timeout=300)
            sampler.stop()
            window = lag_figures(
                sampler.samples, load_start + args.warmup, load_end, name="followup"
            )
            figures.update(
                lags=window["followup_lag_series"]["lag_s"],
                lag_p50_s=window["followup_lag_p50_s"],
                lag_p99_s=window["followup_lag_p99_s"],
                lag_max_s=window["followup_lag_max_s"],
                lag_unresolved=window["followup_lag_unresolved"],
                caught_up_after_s=round(drained, 3),
                lag_series=window["followup_lag_series"],  # every sample of the window
            )
        else:
            figures.update(lags=[], caught_up_after_s=0.0)
        # The CPU of the events of the load until every follower has worked them.
        _wait_followers(server, url, events, on)
        cpu_seconds = (cpu_ticks(background) - ticks) / os.sysconf("SC_CLK_TCK")
        figures.update(
            purchases_per_s=loaded["purchases_per_s"],
            purchase_p99_ms=loaded["purchase_p99_ms"],
            status_read_p99_ms=loaded["status_read_p99_ms"],
            background_cpu_s=round(cpu_seconds, 2),
            events_recorded=count_events(url, events)[1] - head,
            followups_started=_followups_started(url) - followups_before,
        )
    except BenchError as error:
        raise BenchError(f"{error}\n(`daifuku serve`'s log: {server.log_path})") from error
    finally:
        server.stop()
    Path(server.log_path).unlink(missing_ok=True)
    return figures


def _wait_followers(server: ServeServer, url: str, events: str, on: bool) -> None:
    """Until the background work's followers of the log have caught up with it: the
    follow-up process (if on), then the read models (the process's own events included)."""
    for follower in [FollowupPositions, LogPositions] if on else [LogPositions]:
        positions = follower(url, events)
        try:
            positions.wait_caught_up(server, timeout=600)
        finally:
            positions.close()


def _position(url: str) -> int:
    """The follow-up process's position (0 before it has one)."""
    from adapters.followup_process import NAME  # noqa: PLC0415

    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT position FROM daifuku_followup_tracking WHERE name = %s", (NAME,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def _followups_started(url: str) -> int:
    """Follow-ups the process has started so far (0 before its tables exist)."""
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM daifuku_followup_view").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def _cpu_ms_per_event(rounds: list[dict[str, Any]]) -> float:
    events = sum(int(r["events_recorded"]) for r in rounds)
    seconds = sum(float(r["background_cpu_s"]) for r in rounds)
    return round(1000 * seconds / max(events, 1), 3)
