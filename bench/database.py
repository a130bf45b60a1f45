"""The bench's PostgreSQL: a server on 127.0.0.1 (devtools.postgres finds or starts it, as for the
test suite), a fresh database on it, and what the bench reads from its tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.common import BenchError, log
from devtools.postgres import (
    NoServer,
    ServerUnusable,
    admin_server,
    create_database,
    drop_database,
    url_with_database,
)

ENV_URL = "DAIFUKU_BENCH_DATABASE_URL"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DATABASE_PREFIX = "daifuku_bench_"
RAW_TABLE = "bench_raw_events"


def check_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"{url!r} is not a postgresql:// URL")
    host = parts.hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise BenchError(f"the bench only talks to 127.0.0.1; {url!r} names host {host!r}")


@contextmanager
def postgres_server(configured: str) -> Iterator[tuple[str, str]]:
    """(admin URL, how it was found) of a server on 127.0.0.1 where the bench may create a db."""
    if configured:
        check_loopback(configured)

    def starting(bin_dir: Path) -> None:
        log(f"no server on 127.0.0.1:5432: starting a throwaway cluster from {bin_dir}")

    try:
        with admin_server(configured, on_cluster=starting) as found:
            yield found
    except ServerUnusable as problem:
        raise BenchError(f"{configured!r} is not usable: {problem}") from problem
    except NoServer as error:
        if error.bin_dir is None:
            raise BenchError(
                f"no PostgreSQL on 127.0.0.1:5432, {ENV_URL} is not set and no PostgreSQL binaries "
                f"(initdb, pg_ctl) were found: start a server or apt-get install postgresql"
            ) from error
        raise BenchError(f"a throwaway cluster could not be started: {error}") from error


@contextmanager
def bench_database(admin_url: str, keep: bool = False) -> Iterator[str]:
    """A fresh database on the server, dropped (with any connection left to it) on exit,
    unless ``keep`` (``--keep-database``: to profile a replay of the same history later)."""
    name = create_database(admin_url, DATABASE_PREFIX)
    log(f"created database {name}")
    try:
        yield url_with_database(admin_url, name)
    finally:
        if keep:
            log(f"kept database {name} (--keep-database): drop it when done")
        else:
            try:
                drop_database(admin_url, name, connect_timeout=5)
                log(f"dropped database {name}")
            except psycopg.Error as error:
                log(f"WARNING: could not drop database {name}: {error}")


def server_facts(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        facts: dict[str, Any] = {}
        for setting in ("server_version", "fsync", "synchronous_commit", "max_connections",
                        "shared_buffers"):  # fmt: skip
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = row[0] if row else None
    return facts


def events_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables shaped like the event store's (a notification id and a state), by name."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name IN ('notification_id', 'state') AND table_name <> %s "
        "GROUP BY table_name HAVING count(*) = 2 ORDER BY table_name",
        (RAW_TABLE,),
    ).fetchall()
    return [str(table) for (table,) in rows]


def events_table(url: str) -> str:
    """The ledger's events table (the view's tracking table has a notification id but no state)."""
    with psycopg.connect(url) as conn:
        tables = events_tables(conn)
    if len(tables) != 1:
        raise BenchError(f"expected one events table in the bench database, found {tables}")
    return tables[0]


def stored_event_size(url: str) -> tuple[int, str]:
    """Average size of a stored event's state in the ledger's events table (and the table)."""
    with psycopg.connect(url) as conn:
        for table in events_tables(conn):
            row = conn.execute(
                sql.SQL("SELECT avg(octet_length(state))::int FROM {}").format(
                    sql.Identifier(table)
                )
            ).fetchone()
            if row and row[0]:
                return int(row[0]), str(table)
    return 500, "(none found: 500 bytes assumed)"


def count_events(url: str, table: str) -> tuple[int, int]:
    """(events, largest notification id) of the events table."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{unquote(parts.username or '')}:***@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url
