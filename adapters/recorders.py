"""The event store's recorders: on PostgreSQL the library's with an insert in one statement;
on both, a probe of which of many aggregates exist in one query (for an import's batch).

eventsourcing's ``PostgresApplicationRecorder`` takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` in
every transaction that inserts events, so that transactions commit in the order of the
notification ids they were issued and a reader tailing the log never passes over a gap that is
filled in later. It sends BEGIN, the lock, NOTIFY and the INSERT as one pipeline, waits for the
ids, then sends COMMIT: the table stays locked for a round trip, and in a gunicorn worker for as
long as the writing thread then waits for the GIL before it can send the COMMIT. Every other
writer of the database waits behind that.

Here the lock, the NOTIFY and the INSERT run in a PL/pgSQL function called as one statement on
the pool's autocommit connection: PostgreSQL commits the statement's implicit transaction as
soon as the function returns, so the lock covers the server's own work only. The guarantee is
the same (one writer at a time, commit order = id order). The library's own function
(``POSTGRES_ENABLE_DB_FUNCTIONS``) is one statement too, but without the lock; when that
setting is on, or for a process recorder's tracking insert, the library's code runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composable, Identifier


class LockedInsertApplicationRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.locked_insert_function = f"{events_table_name}_insert_arrays"
        self.check_identifier_length(self.locked_insert_function)
        schema = Identifier(datastore.schema)
        function = Identifier(self.locked_insert_function)
        # Four arrays sent in binary, rather than one array of the composite type in text:
        # psycopg dumps the composite's bytea through a regular expression, 35 us an event.
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}(ids uuid[], versions bigint[], "
                "topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "RETURN QUERY INSERT INTO {schema}.{table} AS t "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id; "
                "END; $BODY$"
            ).format(
                schema=schema,
                function=function,
                lock_timeout=datastore.lock_timeout,
                table=Identifier(self.events_table_name),
                channel=Identifier(self.channel_name),
            )
        )
        self.locked_insert_statement = rendered(
            SQL("SELECT * FROM {0}.{1}(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])").format(
                schema, function
            )
        )
        # The library composes its SELECT for every call, and psycopg converts a composed
        # query anew each time (about a tenth of a purchase's CPU): each variant is rendered
        # once here, and psycopg's cache of converted queries does the rest.
        self._select_events_statements: dict[tuple[bool, bool, bool, bool], bytes] = {}
        self._existing_statement = rendered(
            SQL(
                "SELECT originator_id FROM {0}.{1} WHERE originator_id = ANY(%s) "
                "AND originator_version = 1"
            ).format(schema, Identifier(self.events_table_name))
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        shape = (gt is not None, lte is not None, desc, limit is not None)
        statement = self._select_events_statements.get(shape)
        if statement is None:
            composed = self.select_events_statement
            if gt is not None:
                composed += SQL(" AND originator_version > %s")
            if lte is not None:
                composed += SQL(" AND originator_version <= %s")
            composed += SQL(
                " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC"
            )
            if limit is not None:
                composed += SQL(" LIMIT %s")
            statement = self._select_events_statements[shape] = rendered(composed)
        params = [p for p in (originator_id, gt, lte, limit) if p is not None]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def existing_ids(self, originator_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these aggregates have events: one query (an import's batch of members)."""
        if not originator_ids:
            return set()
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._existing_statement, (list(originator_ids),), prepare=True)
            return {row["originator_id"] for row in curs.fetchall()}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The application passes tracking=None; a process recorder's tracking needs the
        # library's transaction.
        tracking = kwargs.get("tracking")
        if self.datastore.enable_db_functions or tracking is not None or not stored_events:
            inserted: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return inserted
        arrays = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.locked_insert_statement, arrays, prepare=True, binary=True)
            return [row[self.locked_insert_function] for row in curs.fetchall()]


def rendered(statement: Composable) -> bytes:
    """The statement's text, so that psycopg converts it once and caches it."""
    return statement.as_bytes(None)


class ProbingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder, with the one-query existence probe of the one above."""

    def existing_ids(self, originator_ids: Sequence[UUID]) -> set[UUID]:
        found: set[UUID] = set()
        ids = list(originator_ids)
        for start in range(0, len(ids), 500):  # well inside SQLite's limit of parameters
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            with self.datastore.transaction(commit=False) as c:
                c.execute(
                    f"SELECT originator_id FROM {self.events_table_name} "
                    f"WHERE originator_id IN ({marks}) AND originator_version = 1",
                    [uid.hex for uid in chunk],
                )
                found.update(UUID(row["originator_id"]) for row in c.fetchall())
        return found
