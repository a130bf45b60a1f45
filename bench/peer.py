"""The peer a user would write without Daifuku: the ``eventsourcing`` library's own ``Application``.

One aggregate (``Customer``, an ``Aggregate`` subclass) with a one-event purchase command
(``record_purchase``, an ``@event`` method), used as the library's documentation shows:
``repository.get`` the aggregate, call the command, ``app.save`` it; a version conflict with
another writer (``RecordConflictError``) is retried. No HTTP, no read model, no idempotency by
order id: the least a user would write. It runs on the bench's PostgreSQL in a database of its
own (``PERSISTENCE_MODULE=eventsourcing.postgres``), with the library's default settings.

Concurrency, as the library documents it for an application behind a server: one application
object per process, shared by that process's threads (it is thread-safe and its connection pool
is sized to them, ``POSTGRES_POOL_SIZE``). The bench mirrors the API's gunicorn: ``--workers``
processes sharing ``--clients`` writer threads between them, so the peer has the same number of
concurrent writers and the same number of processes (cores it can use past the GIL) as the API.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from bench.clients import require_no_errors, run_clients
from bench.common import log
from bench.database import bench_database
from bench.stats import completed_in_window, cpu_ms, in_window, ms, percentile

CONFLICT_RETRIES = 5


class Customer(Aggregate):
    """A loyalty member: points per whole unit of money spent."""

    @event("Enrolled")
    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.points = 0
        self.purchases = 0

    @staticmethod
    def create_id(member_id: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"/customers/{member_id}")

    @event("PurchaseRecorded")
    def record_purchase(self, order_id: str, amount: str, currency: str) -> None:
        self.points += int(Decimal(amount))
        self.purchases += 1


class Shop(Application[uuid.UUID]):
    def enrol(self, *member_ids: str) -> list[uuid.UUID]:
        customers = [Customer(member_id) for member_id in member_ids]
        self.save(*customers)
        return [customer.id for customer in customers]

    def record_purchase(self, customer_id: uuid.UUID, order_id: str, amount: str) -> int:
        """The purchase recorded; how many times a conflict with another writer was retried."""
        for attempt in range(CONFLICT_RETRIES + 1):
            customer: Customer = self.repository.get(customer_id)
            customer.record_purchase(order_id, amount, "USD")
            try:
                self.save(customer)
            except RecordConflictError:
                if attempt == CONFLICT_RETRIES:
                    raise
                continue
            return attempt
        raise AssertionError("unreachable")


def postgres_env(url: str, pool_size: int) -> dict[str, str]:
    """The library's settings for the database at ``url`` (``postgresql://user[:pw]@host:port/db``)."""
    parts = urlsplit(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
    }


def peer_writers(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """One process: an application shared by ``threads`` writers, purchases back to back for
    random customers for warmup + duration seconds (a client kind of ``bench.clients``)."""
    # The tables exist (peer_phase made them): processes making them again together race on
    # PostgreSQL's catalogue ("tuple concurrently updated").
    app = Shop(env={**postgres_env(spec["url"], spec["threads"]), "CREATE_TABLE": "no"})
    customers = [Customer.create_id(m) for m in spec["member_ids"]]
    app.repository.get(customers[0])  # connected before the clock starts
    results: list[dict[str, Any]] = []
    start = threading.Barrier(spec["threads"] + 1)
    clock = [0.0]  # when every process's writers start (set before the barrier opens)

    def writer(index: int) -> None:
        rng = random.Random(spec["seed"] * 100 + index)
        starts: list[float] = []
        latencies: list[float] = []
        errors: list[str] = []
        conflicts = 0
        start.wait()
        t0 = clock[0]
        end = t0 + spec["warmup"] + spec["duration"]
        sequence = 0
        while (began := time.monotonic()) < end:
            sequence += 1
            cents = rng.randint(500, 20_000)
            try:
                conflicts += app.record_purchase(
                    rng.choice(customers), f"{spec['order_prefix']}-{index}-{sequence}",
                    f"{cents // 100}.{cents % 100:02d}",
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001 (counted and shown, as the HTTP clients do)
                if len(errors) < 5:
                    errors.append(f"purchase: {error!r}")
                continue
            starts.append(began - t0)
            latencies.append(time.monotonic() - began)
        results.append({"starts": starts, "latencies": latencies, "errors": errors,
                        "conflicts": conflicts})  # fmt: skip

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(spec["threads"])]
    for thread in threads:
        thread.start()
    ready()
    clock[0] = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    app.close()
    errors = [e for r in results for e in r["errors"]]
    return {
        "ok": sum(len(r["starts"]) for r in results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "starts": [s for r in results for s in r["starts"]],
        "latencies": [lat for r in results for lat in r["latencies"]],
        "conflicts": sum(r["conflicts"] for r in results),
    }


def writer_split(writers: int, processes: int) -> list[int]:
    """``writers`` threads over at most ``processes`` processes, as evenly as can be."""
    processes = max(min(processes, writers), 1)
    return [writers // processes + (1 if i < writers % processes else 0) for i in range(processes)]


def peer_phase(args: argparse.Namespace, admin_url: str, run_id: str) -> dict[str, Any]:
    """Purchases/s of the plain ``eventsourcing`` application, in a database of its own."""
    split = writer_split(args.clients, args.workers)
    members = [f"peer-{run_id}-m{i}" for i in range(args.members)]
    with bench_database(admin_url, args.keep_database) as url:
        started = time.monotonic()
        shop = Shop(env=postgres_env(url, 1))  # creates the library's tables, once
        for first in range(0, len(members), 500):
            shop.enrol(*members[first : first + 500])
        shop.close()
        log(f"peer: {len(members)} customers enrolled in {time.monotonic() - started:.1f} s; "
            f"{args.clients} writer threads in {len(split)} processes ({split}), "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured")  # fmt: skip
        common = {"url": url, "member_ids": members, "warmup": args.warmup,
                  "duration": args.duration}  # fmt: skip
        jobs = [
            ("peer", {**common, "threads": n, "seed": i, "order_prefix": f"{run_id}-P{i}"})
            for i, n in enumerate(split)
        ]
        results = run_clients(jobs, timeout=args.warmup + args.duration + 300)
    require_no_errors(results, "peer phase")
    window = (args.warmup, args.warmup + args.duration)
    latencies = [lat for r in results for lat in in_window(r, *window)]
    completed = sum(completed_in_window(r, *window) for r in results)
    return {
        "peer_purchases_per_s": round(completed / args.duration, 1),
        "peer_purchase_p50_ms": ms(percentile(latencies, 50)),
        "peer_purchase_p99_ms": ms(percentile(latencies, 99)),
        "peer_conflicts_retried": sum(r["conflicts"] for r in results),
        # the application's own CPU (its processes, warm-up included), PostgreSQL's not counted
        "peer_cpu_ms_per_purchase": cpu_ms(
            sum(r["cpu"] for r in results), sum(r["ok"] for r in results)
        ),
        "peer_processes": len(split),
        "peer_threads": split,
    }
