"""What an import refused, remembered: running the same import again refuses it again.

A record refused at its own time (a redemption before its points were available) would
otherwise be applied by a second run of the same file, late, at the member's later business
time; a run resumed after an interruption would then end differently from one that was not
interrupted. So each refusal is kept by the import's name, the digest of its whole input and
the line, and a run of the same input answers it from here. A changed file (a record fixed, a
missing member added) has another digest: its records are tried afresh.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from adapters.settings import Database
from adapters.sidetables import Connection, connect

SCHEMA_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS daifuku_import_rejections ("
    " import_name text NOT NULL, digest text NOT NULL, line bigint NOT NULL,"
    " problem text NOT NULL, PRIMARY KEY (import_name, digest, line))",
)
SELECT = "SELECT line, problem FROM daifuku_import_rejections WHERE import_name = ? AND digest = ?"
INSERT = (
    "INSERT INTO daifuku_import_rejections (import_name, digest, line, problem)"
    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


class Rejections(Protocol):
    def recalled(self, name: str, digest: str) -> dict[int, dict[str, Any]]:
        """The problems of the lines refused by earlier runs of this input, by line."""
        ...

    def remember(
        self, name: str, digest: str, refused: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        """Keep these refusals (line, problem) of this input."""
        ...


class MemoryRejections:
    """For an in-memory ledger (tests) and an app built without a database of its own."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def recalled(self, name: str, digest: str) -> dict[int, dict[str, Any]]:
        with self._lock:
            return dict(self._kept.get((name, digest), {}))

    def remember(
        self, name: str, digest: str, refused: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        with self._lock:
            kept = self._kept.setdefault((name, digest), {})
            for line, problem in refused:
                kept.setdefault(line, problem)


class TableRejections:
    """In ``daifuku_import_rejections``, in the ledger's own database."""

    def __init__(self, database: Database) -> None:
        self._db: Connection = connect(database, name="daifuku-imports")
        self._db.create_tables(SCHEMA_STATEMENTS)

    def recalled(self, name: str, digest: str) -> dict[int, dict[str, Any]]:
        rows = self._db.run(SELECT, (name, digest))
        return {int(line): json.loads(problem) for line, problem in rows}

    def remember(
        self, name: str, digest: str, refused: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        statements = [
            (INSERT, (name, digest, line, json.dumps(problem))) for line, problem in refused
        ]
        if statements:
            self._db.run_together(statements)

    def close(self) -> None:
        self._db.close()
