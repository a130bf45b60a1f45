"""The ceiling of the stack: ``bench.ceiling_app`` under the API's gunicorn configuration, driven
by the load phase's clients (the purchase clients and the status reader) for the same time."""

from __future__ import annotations

import argparse
from typing import Any

from bench.clients import require_no_errors, run_clients
from bench.common import log
from bench.cpu import CpuMeter
from bench.load import cpu_seconds
from bench.server import Server
from bench.stats import completed_in_window, cpu_ms, in_window, ms, percentile

APP = "bench.ceiling_app:app"
# (prefix of the figures, path): plain Flask; Flask + flask-smorest + webargs + marshmallow.
VARIANTS = (("ceiling", "/v1/purchases"), ("schema_ceiling", "/v1/schema/purchases"))


def ceiling_phase(args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    server = Server(
        "", args.workers, args.threads, args.worker_class, args.gunicorn_args, app=APP,
        name="ceiling",
    )  # fmt: skip
    members = [f"bench-{run_id}-m{i}" for i in range(args.members)]
    variants = VARIANTS if args.ceiling_schema else VARIANTS[:1]
    figures: dict[str, Any] = {}
    try:
        server.start()
        log(f"ceiling: {APP} on 127.0.0.1:{server.port} ({args.workers} workers x "
            f"{args.threads} threads, {args.worker_class})")  # fmt: skip
        for prefix, path in variants:
            figures.update(_drive(args, server, members, run_id, prefix, path))
    except BaseException:
        log(f"the ceiling server's log: {server.log_path}")
        raise
    finally:
        server.stop()
    server.log_path.unlink(missing_ok=True)
    return figures


def _drive(
    args: argparse.Namespace,
    server: Server,
    members: list[str],
    run_id: str,
    prefix: str,
    path: str,
) -> dict[str, Any]:
    common = {"port": server.port, "key": "ceiling", "member_ids": members,
              "warmup": args.warmup, "duration": args.duration}  # fmt: skip
    jobs = [
        ("load", {**common, "seed": i, "order_prefix": f"{run_id}-C{i}", "path": path})
        for i in range(args.clients)
    ]
    jobs.append(("status", {**common, "seed": 10_000, "rate": args.status_rate}))
    log(f"  POST {path}: {args.clients} clients + 1 status reader at {args.status_rate:g}/s, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured")  # fmt: skip
    cpu = CpuMeter(server)
    results = run_clients(jobs, timeout=args.warmup + args.duration + 300, on_start=cpu.start)
    cpu.stop()
    require_no_errors(results, f"ceiling ({path})")
    posts = results[:-1]
    window = (args.warmup, args.warmup + args.duration)
    latencies = [lat for r in posts for lat in in_window(r, *window)]
    completed = sum(completed_in_window(r, *window) for r in posts)
    answered = sum(r["ok"] for r in posts)
    figures = {
        f"{prefix}_requests_per_s": round(completed / args.duration, 1),
        f"{prefix}_p50_ms": ms(percentile(latencies, 50)),
        f"{prefix}_p99_ms": ms(percentile(latencies, 99)),
        # the workers' CPU over the run over the POSTs answered (the status reads ride along,
        # as in the load phase)
        f"{prefix}_cpu_ms_per_request": cpu_ms(
            cpu_seconds(cpu.result, "api_workers_cores"), answered
        ),
        f"{prefix}_cpu": cpu.result,
    }
    log(f"  {figures[f'{prefix}_requests_per_s']} requests/s, p50 {figures[f'{prefix}_p50_ms']} "
        f"ms; {figures[f'{prefix}_cpu_ms_per_request']} ms of worker CPU per request")  # fmt: skip
    return figures
