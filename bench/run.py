"""``python -m bench.run`` (``make bench``): the options, the phases in order, the report.

What each phase measures is in the package's docstring (``bench/__init__.py``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ceiling import ceiling_phase
from bench.clients import stop_children
from bench.common import ROOT, BenchError, log
from bench.cpu import machine_busy
from bench.database import (
    ENV_URL,
    bench_database,
    postgres_server,
    redact,
    server_facts,
)
from bench.followups import followup_phase
from bench.importing import import_phase
from bench.load import load_phase
from bench.long_history import long_history_phase
from bench.memory import memory_phase
from bench.peer import peer_phase
from bench.raw import raw_phase
from bench.replay import replay_phase, top_up_phase
from bench.report import (
    anchor_ratios,
    git_revision,
    print_table,
    results,
    skipped_targets,
    source_digest,
    write_results,
)
from bench.scale import parse_sizes, scale_phase
from bench.server import Server, create_storefront_key, prepare_schema
from bench.webhooks import ENV as WEBHOOK_ENV
from bench.webhooks import webhook_phase
from devtools.postgres import LOCAL_ADMIN_URL

RESULTS = ROOT / "bench" / "results.json"

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


def _sizes(text: str) -> list[int]:
    try:
        return parse_sizes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    add("--ceiling", action=argparse.BooleanOptionalAction, default=True,
        help="the same load against a trivial Flask endpoint under the same gunicorn")  # fmt: skip
    add("--ceiling-schema", action=argparse.BooleanOptionalAction, default=True,
        help="the ceiling once more through flask-smorest, webargs and marshmallow")  # fmt: skip
    add("--peer", action=argparse.BooleanOptionalAction, default=True,
        help="purchases/s of a plain eventsourcing Application on the same PostgreSQL")  # fmt: skip
    add("--raw-duration", type=float, default=10.0, help="seconds of raw INSERT + COMMIT")
    add("--raw-writers", type=int, default=8, help="concurrent raw writers")
    add("--raw-locked", action=argparse.BooleanOptionalAction, default=True,
        help="also raw INSERT + COMMIT under the event store's table lock")  # fmt: skip
    add("--import-phase", action=argparse.BooleanOptionalAction, default=True,
        help="`daifuku import` of a generated history into a database of its own")  # fmt: skip
    add("--import-members", type=int, default=20_000, help="members of the imported history")
    add("--import-records", type=int, default=100_000,
        help="records of the imported history, its members included")  # fmt: skip
    add("--import-batch", type=int, default=0,
        help="`daifuku import --batch` (0: the command's default)")  # fmt: skip
    add("--import-workers", type=int, default=0,
        help="`daifuku import --workers` (0: the command's default)")  # fmt: skip
    add("--long-events", type=int, default=5000, help="events of the long-history member")
    add("--long-samples", type=int, default=300, help="purchases timed per member kind")
    add("--memory-phase", action=argparse.BooleanOptionalAction, default=True,
        help="post --memory-purchases across --memory-members, then read the peak RSS")  # fmt: skip
    add("--memory-members", type=int, default=10_000)
    add("--memory-purchases", type=int, default=100_000)
    add("--memory-clients", type=int, default=8, help="concurrent clients of the memory phase")
    add("--worker-lag", action=argparse.BooleanOptionalAction, default=True,
        help="run `daifuku project` during the load; measure its lag behind writers")  # fmt: skip
    add("--webhooks", action=argparse.BooleanOptionalAction, default=True,
        help="the load again with `daifuku webhooks` delivering every event to a receiver, "
             "then without, --webhook-rounds times (A-B-A-B-A with the load phase)")  # fmt: skip
    add("--webhook-rounds", type=int, default=2,
        help="loads with webhooks, each then one without (after the load phase)")  # fmt: skip
    add("--followups", action=argparse.BooleanOptionalAction, default=True,
        help="the load on `daifuku serve` with its follow-up process and without "
             "(DAIFUKU_FOLLOWUPS=on/off), interleaved: A-B-A-B-A by default")  # fmt: skip
    add("--followup-rounds", type=int, default=2,
        help="loads with the follow-up process, each then one without (after a first)")  # fmt: skip
    add("--lag-interval", type=float, default=0.05, help="seconds between lag samples")
    add("--worker-poll", type=float, default=0.2, help="`daifuku project --poll` (idle seconds)")
    add("--replay-phase", action=argparse.BooleanOptionalAction, default=True,
        help="time `daifuku replay` of the history against a raw scan of the events")  # fmt: skip
    add("--replay-min-events", type=int, default=200_000,
        help="purchases are added before the replay until the log has this many")  # fmt: skip
    add("--bulk-clients", type=int, default=8, help="clients adding purchases before the replay")
    add("--raw-scan-page", type=int, default=1000, help="rows per fetch of the raw scan")
    add("--scale-phase", action=argparse.BooleanOptionalAction, default=True,
        help="time the analytics reads with --scale-members members in the store")  # fmt: skip
    add("--scale-members", type=_sizes, default="10000,100000", metavar="N,N",
        help="member counts of the scale phase, separated by commas")  # fmt: skip
    add("--scale-calls", type=int, default=20, help="timed calls per read and size (at most)")
    add("--scale-budget", type=float, default=60.0,
        help="seconds of timed calls per read and size (then no more, but at least 3)")  # fmt: skip
    add("--scale-timeout", type=float, default=30.0, help="seconds before a read call gives up")
    add("--scale-project-timeout", type=float, default=1800.0,
        help="seconds the read models may take to catch up after an import")  # fmt: skip
    add("--workers", type=int, default=2, help="gunicorn worker processes")
    add("--threads", type=int, default=8, help="threads per gunicorn worker (gthread)")
    add("--worker-class", default="gthread", help="gunicorn worker class")
    add("--gunicorn-args", default="", help="more gunicorn options, e.g. '--keep-alive 5'")
    add("--keep-database", action="store_true",
        help="leave the bench database on the server (to profile a replay later)")  # fmt: skip
    add("--results", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    for name in ("clients", "members", "raw_writers", "workers", "threads", "memory_clients",
                 "bulk_clients", "raw_scan_page", "scale_calls", "webhook_rounds",
                 "followup_rounds"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.import_members < 1 or args.import_records < args.import_members:
        parser.error("--import-members must be at least 1 and --import-records at least as many")
    if args.import_batch < 0 or args.import_workers < 0:
        parser.error("--import-batch and --import-workers must not be negative")
    positive = (args.duration, args.raw_duration, args.status_rate, args.lag_interval,
                args.worker_poll, args.scale_budget, args.scale_timeout,
                args.scale_project_timeout)  # fmt: skip
    if min(positive) <= 0:
        parser.error("durations and rates must be positive")
    return args


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_phases(
    args: argparse.Namespace,
    server: Server,
    admin_url: str,
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

    if args.webhooks:
        admin_key, _ = create_storefront_key(url, role="admin")
        phases["webhooks"] = webhook_phase(
            args, server, admin_key, key, run_id, url, figures["purchases_per_s"]
        )
        figures.update(
            {k: v for k, v in phases["webhooks"].items() if not isinstance(v, dict | list)}
        )
        log(f"  webhooks: delivery lag p50 {figures['webhook_delivery_lag_p50_s']} s, p99 "
            f"{figures['webhook_delivery_lag_p99_s']} s; purchases/s with them over without "
            f"{figures['webhook_purchases_ratio']} "
            f"({figures['webhook_dispatcher_cpu_ms_per_message']} ms CPU a message)")  # fmt: skip

    if args.followups:  # servers of their own; the API stands idle
        phases["followups"] = followup_phase(args, key, run_id, url)
        figures.update(
            {k: v for k, v in phases["followups"].items() if not isinstance(v, dict | list)}
        )
        log(f"  follow-ups: lag p50 {figures['followup_lag_p50_s']} s, p99 "
            f"{figures['followup_lag_p99_s']} s; purchases/s with the process over without "
            f"{figures['followup_purchases_ratio']} "
            f"({figures['followup_process_cpu_ms_per_event']} ms CPU an event)")  # fmt: skip

    if args.ceiling:  # beside the load, while the API stands idle
        phases["ceiling"] = ceiling_phase(args, run_id)
        figures.update({k: v for k, v in phases["ceiling"].items() if not isinstance(v, dict)})
    if args.peer:
        phases["peer"] = peer_phase(args, admin_url, run_id)
        figures.update({k: v for k, v in phases["peer"].items() if not isinstance(v, list)})
        log(f"  peer {figures['peer_purchases_per_s']} purchases/s, p50 "
            f"{figures['peer_purchase_p50_ms']} ms ({figures['peer_conflicts_retried']} "
            f"conflicts retried)")  # fmt: skip
    figures.update(anchor_ratios(figures))
    if args.ceiling or args.peer:
        log(f"  purchases/s over the ceiling {figures.get('ratio_to_ceiling')}, over the peer "
            f"{figures.get('ratio_to_peer')}; share of a purchase's API CPU: plain Flask "
            f"{figures.get('flask_cpu_share')}, with flask-smorest and marshmallow "
            f"{figures.get('framework_cpu_share')}")  # fmt: skip

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

    if args.import_phase:  # beside the raw rate of this run, while the API stands idle
        phases["import"] = import_phase(args, admin_url)
        figures.update(
            {k: v for k, v in phases["import"].items() if not isinstance(v, dict | list)}
        )
        figures["import_ratio"] = round(
            figures["import_purchases_per_s"] / figures["raw_inserts_per_s"], 3
        )
        log(f"  import {figures['import_purchases_per_s']} purchases/s "
            f"({figures['import_records_per_s']} records/s, {figures['import_seconds']} s, "
            f"{figures['import_rejected']} rejected); over raw inserts/s "
            f"{figures['import_ratio']}")  # fmt: skip

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

    if args.scale_phase:  # last: the API of the other phases stands idle
        phases["scale"] = scale_phase(args, admin_url)
        figures.update({k: v for k, v in phases["scale"].items() if not isinstance(v, dict)})


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
        "ceiling": args.ceiling,
        "ceiling_schema": args.ceiling_schema,
        "peer": args.peer,
        "scale_phase": args.scale_phase,
        "scale_members": args.scale_members,
        "scale_calls": args.scale_calls,
        "scale_budget_s": args.scale_budget,
        "scale_timeout_s": args.scale_timeout,
        "raw_writers": args.raw_writers,
        "raw_duration_s": args.raw_duration,
        "raw_locked": args.raw_locked,
        "import_phase": args.import_phase,
        "import_members": args.import_members,
        "import_records": args.import_records,
        "import_batch": args.import_batch,
        "import_workers": args.import_workers,
        "long_events": args.long_events,
        "long_samples": args.long_samples,
        "memory_phase": args.memory_phase,
        "memory_members": args.memory_members,
        "memory_purchases": args.memory_purchases,
        "memory_clients": args.memory_clients,
        "worker_lag": args.worker_lag,
        "webhooks": args.webhooks,
        "webhook_rounds": args.webhook_rounds,
        "followups": args.followups,
        "followup_rounds": args.followup_rounds,
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
        server = Server(
            url,
            args.workers,
            args.threads,
            args.worker_class,
            args.gunicorn_args,
            env=WEBHOOK_ENV if args.webhooks else None,  # the receiver is on loopback
        )
        stack.callback(server.stop)
        prepare_schema(url)
        log(f"gunicorn: {args.workers} workers x {args.threads} threads ({args.worker_class})")
        server.start()
        config["server_command"] = " ".join(server.command()[1:])
        log(f"API on 127.0.0.1:{server.port} (workers {server.worker_pids()})")
        try:
            run_phases(args, server, admin_url, url, key, run_id, figures, phases)
        except BenchError as error:
            if not server.running():
                raise BenchError(f"{error}\nthe API server died:\n{server.log_tail()}") from error
            raise BenchError(f"{error}\n(the server's log: {server.log_path})") from error
    server.log_path.unlink(missing_ok=True)  # kept only when the run failed
    finished_at = datetime.now(UTC)
    return results(figures, phases, config, started_at, finished_at, skipped_targets(args))


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
    write_results(report, args.results)
    outcome = "all targets met" if report["passed"] else "targets MISSED"
    log(f"results written to {args.results}; {outcome}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
