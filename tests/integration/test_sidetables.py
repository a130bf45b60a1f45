"""The side tables' connection: statements sent together keep their order and their
transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import psycopg
import pytest

from adapters.settings import Database
from adapters.sidetables import Connection, connect


@pytest.fixture
def db(database_url: str) -> Iterator[Connection]:
    connection = connect(Database.from_url(database_url))
    connection.create_tables(["CREATE TABLE figures (name TEXT PRIMARY KEY, value INTEGER)"])
    yield connection
    connection.close()


def test_statements_run_each_in_their_order(db: Connection) -> None:
    with db.transaction() as t:
        t.run_each(
            [
                ("INSERT INTO figures (name, value) VALUES (?, ?)", ("a", 1)),
                ("UPDATE figures SET value = value * 10 WHERE name = ?", ("a",)),
                ("UPDATE figures SET value = value + 1 WHERE name = ?", ("a",)),
            ]
        )
    assert db.run("SELECT value FROM figures WHERE name = ?", ("a",)) == [(11,)]


def test_one_failing_statement_undoes_those_sent_with_it(db: Connection) -> None:
    db.run("INSERT INTO figures (name, value) VALUES (?, ?)", ("a", 11))
    failing = [
        ("UPDATE figures SET value = 0 WHERE name = ?", ("a",)),
        ("INSERT INTO figures (name, value) VALUES (?, ?)", ("a", 2)),
    ]
    refused = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)
    with pytest.raises(refused), db.transaction() as t:
        t.run_each(failing)
    assert db.run("SELECT value FROM figures WHERE name = ?", ("a",)) == [(11,)]
