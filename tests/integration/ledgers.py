"""Ledgers on a real database, built the way the server builds them (cache on)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg

from adapters.settings import Database
from adapters.vault import Vault
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import Member

START = datetime(2024, 1, 1, tzinfo=UTC)


@contextmanager
def open_ledger(
    url: str,
    clock: FixedClock,
    snapshot_interval: int = 100,
    cache: bool = True,
    snapshots: bool = True,
) -> Iterator[Ledger]:
    env = Database.from_url(url).event_store_env()
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = "1000"
    if not snapshots:
        env["IS_SNAPSHOTTING_ENABLED"] = "n"
    vault = Vault.open_database(Database.from_url(url), None)
    ledger = Ledger(env=env, clock=clock, snapshot_interval=snapshot_interval, sealer=vault)
    try:
        yield ledger
    finally:
        ledger.close()
        vault.close()


def snapshot_versions(url: str, originator_id: UUID) -> list[int]:
    """The versions of the member's snapshot rows, read with plain SQL."""
    database = Database.from_url(url)
    if database.kind == "sqlite":
        with closing(sqlite3.connect(database.path)) as conn:
            rows = conn.execute(
                "SELECT originator_version FROM stored_snapshots WHERE originator_id = ?",
                (originator_id.hex,),
            ).fetchall()
    else:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT originator_version FROM daifuku_snapshots WHERE originator_id = %s",
                (originator_id,),
            ).fetchall()
    return sorted(row[0] for row in rows)


def state(member: Member) -> dict[str, Any]:
    return {k: v for k, v in vars(member).items() if k != "_pending_events"}
