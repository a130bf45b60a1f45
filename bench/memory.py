"""Memory: many purchases across many new members, then the peak resident memory of the
workers."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.clients import enrol, require_no_errors, run_clients
from bench.common import log
from bench.cpu import CpuMeter
from bench.server import Server


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
