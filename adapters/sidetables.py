"""Small tables kept beside the event store in the same database: API keys, secrets, data keys.

One connection abstraction for both stores: statements are written with ``?`` placeholders
and run in autocommit mode.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from adapters.settings import Database

PING = "SELECT 1"


class Connection(Protocol):
    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def create_tables(self, statements: Iterable[str]) -> None: ...

    def run_together(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]: ...

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def close(self) -> None: ...


class Transaction(Protocol):
    """Statements run together, all or nothing (``Connection.transaction``)."""

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def run_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def run_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Statements in order, their answers unread: PostgreSQL is sent them all before it
        is waited for (pipeline mode), not one round trip each."""
        ...


class _SQLiteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._connection.execute(statement, tuple(params)).fetchall()

    def run_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(statement, [tuple(row) for row in rows])

    def run_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        for statement, params in statements:
            self._connection.execute(statement, tuple(params))


class _PostgresTransaction:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._connection.execute(statement.replace("?", "%s"), tuple(params))
        return cursor.fetchall() if cursor.description else []

    def run_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._connection.cursor() as cursor:
                cursor.executemany(statement.replace("?", "%s"), [tuple(row) for row in rows])

    def run_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        if statements:
            with self._connection.pipeline(), self._connection.cursor() as cursor:
                for statement, params in statements:
                    cursor.execute(statement.replace("?", "%s"), tuple(params))


class SQLiteConnection:
    """One connection shared by the process's threads; SQLite serialises writers anyway."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(
            path, timeout=10, check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection.execute(statement, tuple(params)).fetchall()

    def create_tables(self, statements: Iterable[str]) -> None:
        for statement in statements:
            self.run(statement)

    def run_together(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """All or nothing, with the write lock taken first (no other writer in between)."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                found = [
                    self._connection.execute(statement, tuple(params)).fetchall()
                    for statement, params in statements
                ]
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
            return found

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All or nothing, with the write lock taken first."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTransaction(self._connection)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class PostgresConnection:
    def __init__(self, database: Database, name: str = "daifuku-sidetables") -> None:
        kwargs: dict[str, Any] = {
            "host": database.host,
            "port": database.port,
            "user": database.user,
            "password": database.password,
            "dbname": database.name,
            "connect_timeout": 5,
            "autocommit": True,
        }
        if database.schema:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database.schema):
                raise ValueError(f"unusable PostgreSQL schema name {database.schema!r}")
            kwargs["options"] = f"-c search_path={database.schema}"
        self._pool = ConnectionPool(
            min_size=1, max_size=4, kwargs=kwargs, timeout=5, open=True, name=name
        )
        if database.schema:
            self.run(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"')

    def run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as connection:
            cursor = connection.execute(statement.replace("?", "%s"), tuple(params))
            return cursor.fetchall() if cursor.description else []

    def create_tables(self, statements: Iterable[str]) -> None:
        for statement in statements:
            try:
                self.run(statement)
            except (
                psycopg.errors.UniqueViolation,
                psycopg.errors.DuplicateObject,
                psycopg.errors.DuplicateTable,
            ):
                # Another worker created the same table at the same instant: it exists now.
                continue

    def run_together(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """All or nothing, in one transaction (each statement sees what committed before it)."""
        with self._pool.connection() as connection, connection.transaction():
            found = []
            for statement, params in statements:
                cursor = connection.execute(statement.replace("?", "%s"), tuple(params))
                found.append(cursor.fetchall() if cursor.description else [])
            return found

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._pool.connection() as connection, connection.transaction():
            yield _PostgresTransaction(connection)

    def close(self) -> None:
        self._pool.close()


def connect(database: Database, name: str = "daifuku-sidetables") -> Connection:
    if database.kind == "sqlite":
        return SQLiteConnection(database.path)
    return PostgresConnection(database, name)
