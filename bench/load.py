"""Load: purchase clients and one status reader, with the projection worker running beside them
(``--worker-lag``)."""

from __future__ import annotations

import argparse
import math
import os
import time
from contextlib import ExitStack
from typing import Any

from bench.clients import enrol, require_no_errors, run_clients
from bench.common import log
from bench.cpu import CpuMeter
from bench.database import events_table
from bench.server import Server
from bench.stats import completed_in_window, cpu_ms, in_window, ms, percentile
from bench.worker_lag import LagSampler, LogPositions, ProjectionWorkerProcess, lag_figures


def cpu_seconds(result: dict[str, Any], cores: str) -> float:
    """CPU seconds of ``cores`` (a ``CpuMeter`` figure) over the meter's interval."""
    return float(result[cores]) * float(result["seconds"])


def load_phase(
    args: argparse.Namespace,
    server: Server,
    key: str,
    run_id: str,
    url: str,
    again: str = "",
    processes: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """``again``: a tag of a later load over the members of ``run_id``, enrolled before (its
    orders are new ones); ``processes``: more processes of the server whose CPU is measured
    (name -> pids, in ``cpu`` as ``<name>_cores``), such as ``daifuku serve``'s background
    work."""
    members = [f"bench-{run_id}-m{i}" for i in range(args.members)]
    seconds = 0.0
    if not again:
        seconds = enrol(server.port, key, members, args.clients)
        log(f"enrolled {len(members)} members in {seconds:.1f} s")
    common = {"port": server.port, "key": key, "member_ids": members, "warmup": args.warmup,
              "duration": args.duration}  # fmt: skip
    jobs = [
        ("load", {**common, "seed": i, "order_prefix": f"{run_id}{again}-L{i}"})
        for i in range(args.clients)
    ]
    jobs.append(("status", {**common, "seed": 10_000, "rate": args.status_rate}))
    lag: dict[str, Any] = {}
    extra: dict[str, list[int]] = dict(processes or {})
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
    answered = sum(r["ok"] for r in purchases)
    client_cores = sum(r["cpu"] for r in results) / (args.warmup + args.duration)
    busy_cores = cpu.result["machine_busy_fraction"] * (os.cpu_count() or 1)
    others = busy_cores - client_cores - cpu.result["api_workers_cores"]
    others -= cpu.result["postgres_cores"] + sum(cpu.result[f"{name}_cores"] for name in extra)
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
        # CPU of the API's workers (and PostgreSQL's) over the run per purchase answered; the
        # status reads ride along, as in the ceiling phase
        "api_cpu_ms_per_purchase": cpu_ms(cpu_seconds(cpu.result, "api_workers_cores"), answered),
        "postgres_cpu_ms_per_purchase": cpu_ms(cpu_seconds(cpu.result, "postgres_cores"), answered),
        **lag,
        "cpu": {
            **cpu.result,
            "load_clients_cores": round(client_cores, 2),
            "other_processes_cores": round(others, 2),
        },
    }
