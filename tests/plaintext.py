"""Reading every value of every table of a store, to look for personal data in plain text."""

from __future__ import annotations

import zlib
from contextlib import closing, suppress
from typing import Any

from adapters.settings import Database
from adapters.sidetables import connect

SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"
POSTGRES_TABLES = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
)


def every_cell(url: str) -> list[tuple[str, str]]:
    """(table, text) of every value in the store's database, compressed values decompressed."""
    database = Database.from_url(url)
    found: list[tuple[str, str]] = []
    with closing(connect(database, name="daifuku-test-dump")) as db:
        listing = SQLITE_TABLES if database.kind == "sqlite" else POSTGRES_TABLES
        tables = [str(row[0]) for row in db.run(listing)]
        for table in tables:
            for row in db.run(f'SELECT * FROM "{table}"'):
                found.extend((table, as_text(cell)) for cell in row)
    assert len(tables) >= 5, tables  # events, snapshots, views, keys, data keys at least
    return found


def as_text(cell: Any) -> str:
    if isinstance(cell, bytes | memoryview):
        raw = bytes(cell)
        with suppress(zlib.error):
            raw = zlib.decompress(raw)
        return raw.decode("utf-8", errors="replace")
    return str(cell)


def plain_hits(url: str, secrets: list[str]) -> list[tuple[str, str]]:
    """(table, secret) for every secret found in plain text, case aside."""
    return [
        (table, secret)
        for table, cell in every_cell(url)
        for secret in secrets
        if secret.lower() in cell.lower()
    ]
