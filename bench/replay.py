"""Replay: the log topped up to ``--replay-min-events``, then ``daifuku replay`` against a raw scan
of the events table."""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql

from bench.clients import require_no_errors, run_clients
from bench.common import BIN, ROOT, BenchError, log
from bench.cpu import machine_ticks
from bench.database import count_events, events_table
from bench.server import Server
from bench.worker_lag import LogPositions


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
