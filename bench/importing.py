"""Import: a generated history from before Daifuku (``bench.history``) through ``daifuku import``
into a fresh database of its own, timed from the command's start to its exit."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import BIN, ROOT, BenchError, log
from bench.cpu import cpu_ticks, machine_ticks, postgres_pids
from bench.database import bench_database, count_events, events_tables
from bench.history import generate

# A fixed master key: the import's database is new, so any well-formed key will do.
MASTER_KEY = base64.urlsafe_b64encode(b"daifuku bench import master key!").decode().rstrip("=")
APPLIED, REJECTED = 0, 3  # exit statuses of `daifuku import` after which it ran to the end
REJECTS_KEPT = 5  # rejected lines copied into the results
POLL_SECONDS = 0.5


class PostgresTime:
    """CPU seconds of the server's processes from now on, those that start later included
    (the import's backends), read every ``sample`` while they live."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.first = {pid: cpu_ticks([pid]) for pid in postgres_pids()}
        self.last = dict(self.first)

    def sample(self) -> None:
        for pid in postgres_pids():
            ticks = cpu_ticks([pid])
            self.first.setdefault(pid, 0)
            self.last[pid] = max(ticks, self.last.get(pid, 0))

    def seconds(self) -> float:
        self.sample()
        return sum(self.last[pid] - self.first[pid] for pid in self.last) / self.hz


def import_phase(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    """Figures of ``daifuku import`` of ``--import-members`` in ``--import-records`` records."""
    with tempfile.TemporaryDirectory(prefix="daifuku-bench-import-") as tmp:
        folder = Path(tmp)
        history_path = folder / "history.jsonl"
        log(f"import: generating {args.import_members:,} members in {args.import_records:,} "
            f"records")  # fmt: skip
        started = time.perf_counter()
        history = generate(args.import_members, args.import_records)
        size = history.write(history_path)
        generated_s = time.perf_counter() - started
        log(f"  {history.counts} ({size / 2**20:.1f} MiB) in {generated_s:.1f} s")
        with bench_database(admin_url, args.keep_database) as url:
            run = run_import(args, url, history_path, folder)
            with_events = _events(url)
    expected = history.counts
    report = run["report"]
    by_kind = report.get("by_kind", {})
    purchases = int(by_kind.get("purchase", {}).get("applied", 0))
    applied = int(report.get("applied", 0))
    rejected = int(report.get("rejected", 0))
    seconds = run["seconds"]
    for kind, count in expected.items():
        done = by_kind.get(kind, {})
        if int(done.get("applied", 0)) + int(done.get("present", 0)) != count:
            log(f"WARNING: {count} {kind} records generated, the import reports {done}")
    if rejected:
        log(f"WARNING: {rejected} records rejected; the first: {run['rejects_sample'][:1]}")
    return {
        "import_members": expected.get("member", 0),
        "import_records": len(history.records),
        "import_generated": expected,
        "import_file_mb": round(size / 2**20, 1),
        "import_generate_seconds": round(generated_s, 1),
        "import_exit_status": run["status"],
        "import_read": int(report.get("read", 0)),
        "import_applied": applied,
        "import_present": int(report.get("present", 0)),
        "import_rejected": rejected,
        "import_by_kind": by_kind,
        "import_rejects_sample": run["rejects_sample"],
        "import_seconds": round(seconds, 2),
        "import_reported_seconds": report.get("seconds"),
        "import_purchases": purchases,
        "import_purchases_per_s": round(purchases / seconds, 1),
        "import_records_per_s": round(applied / seconds, 1),
        "import_events": with_events,
        "import_events_per_s": round(with_events / seconds, 1),
        "import_process_cores": run["process_cores"],
        "import_postgres_cores": run["postgres_cores"],
        "import_other_cores": run["other_cores"],
        "import_machine_busy_cores": run["machine_busy_cores"],
        "import_output_tail": run["output"].splitlines()[-3:],
    }


def run_import(
    args: argparse.Namespace, url: str, history_path: Path, folder: Path
) -> dict[str, Any]:
    report_path, rejects_path = folder / "report.json", folder / "rejects.jsonl"
    command = [str(BIN / "daifuku"), "import", str(history_path), "--name", "bench",
               "--report-json", str(report_path), "--rejects", str(rejects_path)]  # fmt: skip
    if args.import_batch:
        command += ["--batch", str(args.import_batch)]
    if args.import_workers:
        command += ["--workers", str(args.import_workers)]
    # DAIFUKU_READ_MODELS stays as it is: a direct import writes the ledger only, no view.
    env = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": url,
        "DAIFUKU_MASTER_KEY": MASTER_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    log(f"  `daifuku import` into a database of its own{_batch(args)}")
    output_path = folder / "output.txt"
    machine0 = machine_ticks()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    postgres = PostgresTime()
    started = time.perf_counter()
    with output_path.open("wb") as output_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = started + 600 + args.import_records / 20
        while process.poll() is None:  # its backends exit with it: read their time meanwhile
            if time.perf_counter() > deadline:
                raise BenchError(f"`daifuku import` did not finish in {deadline - started:.0f} s")
            postgres.sample()
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks = [b - a for a, b in zip(machine0, machine_ticks(), strict=False)]
    busy_cores = (1 - (ticks[3] + ticks[4]) / max(sum(ticks), 1)) * (os.cpu_count() or 1)
    cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    postgres_cores = postgres.seconds() / seconds
    others = busy_cores - cpu / seconds - postgres_cores
    if others > 0.25:
        log(f"WARNING: other processes used {others:.2f} cores during the import: figures are low")
    output = output_path.read_text(encoding="utf-8", errors="replace").strip()
    if process.returncode not in (APPLIED, REJECTED):
        raise BenchError(f"`daifuku import` exited with {process.returncode}:\n{output[-3000:]}")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BenchError(
            f"`daifuku import` left no readable report: {error}\n{output[-3000:]}"
        ) from error
    rejects: list[str] = []
    if rejects_path.exists():
        with rejects_path.open(encoding="utf-8") as lines:
            rejects = [line.rstrip("\n") for line in itertools.islice(lines, REJECTS_KEPT)]
    log(f"  exit {process.returncode} after {seconds:.1f} s: read {report.get('read')}, applied "
        f"{report.get('applied')}, present {report.get('present')}, rejected "
        f"{report.get('rejected')}; cores: import {cpu / seconds:.2f}, PostgreSQL "
        f"{postgres_cores:.2f}, machine {busy_cores:.2f}")  # fmt: skip
    return {
        "status": process.returncode,
        "seconds": seconds,
        "report": report,
        "rejects_sample": rejects,
        "output": output,
        "process_cores": round(cpu / seconds, 2),
        "postgres_cores": round(postgres_cores, 2),
        "other_cores": round(max(others, 0.0), 2),
        "machine_busy_cores": round(busy_cores, 2),
    }


def _events(url: str) -> int:
    """Events the import recorded (in the ledger's events table)."""
    with psycopg.connect(url) as conn:
        tables = events_tables(conn)
    if len(tables) != 1:
        log(f"WARNING: expected one events table in the import's database, found {tables}")
        return 0
    return count_events(url, tables[0])[0]


def _batch(args: argparse.Namespace) -> str:
    return f" (--batch {args.import_batch})" if args.import_batch else ""
