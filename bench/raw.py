"""The raw ceiling: one-row INSERT + COMMIT into a table shaped like the event store's, then the
same under the event store's table lock."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
from psycopg import sql

from bench.clients import run_clients
from bench.common import log
from bench.database import RAW_TABLE, stored_event_size


def raw_phase(args: argparse.Namespace, url: str) -> dict[str, Any]:
    size, table = stored_event_size(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # The shape of eventsourcing.postgres's application recorder table.
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "topic text, state bytea, notification_id bigserial, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(sql.Identifier(RAW_TABLE))
        )
        conn.execute(
            sql.SQL("CREATE UNIQUE INDEX {} ON {} (notification_id ASC)").format(
                sql.Identifier(f"{RAW_TABLE}_notification_id_idx"), sql.Identifier(RAW_TABLE)
            )
        )
    log(f"raw: {args.raw_writers} writers, one-row INSERT + COMMIT of {size}-byte states "
        f"(the average in {table}) for {args.raw_duration:g} s")  # fmt: skip
    spec = {"url": url, "duration": args.raw_duration, "state_bytes": size}
    results = run_clients([("raw", spec)] * args.raw_writers, timeout=args.raw_duration + 120)
    inserts = sum(r["ok"] for r in results)
    figures: dict[str, Any] = {
        "raw_inserts_per_s": round(inserts / args.raw_duration, 1),
        "raw_state_bytes": size,
    }
    if args.raw_locked:
        log(f"raw, locked: the same with LOCK TABLE ... IN EXCLUSIVE MODE in each transaction "
            f"(lock + INSERT + COMMIT in one pipeline) for {args.raw_duration:g} s")  # fmt: skip
        locked = {**spec, "locked": True}
        results = run_clients([("raw", locked)] * args.raw_writers, timeout=args.raw_duration + 120)
        figures["raw_locked_inserts_per_s"] = round(
            sum(r["ok"] for r in results) / args.raw_duration, 1
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(RAW_TABLE)))
    return figures
