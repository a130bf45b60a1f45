"""Long history: whether a purchase for a member with thousands of events costs more than one for
a new member."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from bench.clients import Client, purchase_body
from bench.common import BenchError, log
from bench.server import Server
from bench.stats import ms, percentile


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
