"""The member-status read model: one table per database, each row written with its tracking.

A view is a tracking recorder: ``upsert`` writes the member's row and the position of the event
that produced it in one transaction, and the position only moves forward, so an event is
applied exactly once however often the worker is stopped and restarted.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

VIEW_NAME = "member_status"
TRACKING_TABLE = f"{VIEW_NAME}_tracking"  # what the library's PostgreSQL factory names it
MIGRATION = "__migration__"  # the library's marker row in a single-row tracking table


@dataclass(frozen=True)
class MemberStatusRow:
    member_id: str
    status: dict[str, Any]
    version: int
    updated_at: datetime


class MemberStatusView(TrackingRecorder, ABC):
    """Each member's status as of its latest event, and how far the event log has been read."""

    @abstractmethod
    def upsert(
        self,
        member_id: str,
        status: dict[str, Any],
        version: int,
        tracking: Tracking,
        updated_at: datetime,
    ) -> None:
        """Write the row and the tracking position in one transaction (IntegrityError if the
        position was already recorded: then nothing is written)."""

    @abstractmethod
    def row(self, member_id: str) -> MemberStatusRow | None: ...

    def get(self, member_id: str) -> dict[str, Any] | None:
        found = self.row(member_id)
        return None if found is None else found.status

    @abstractmethod
    def all(self) -> Iterator[MemberStatusRow]:
        """Every row, by member id."""

    @abstractmethod
    def rows_with_position(self, application_name: str) -> tuple[int | None, list[MemberStatusRow]]:
        """Every row and the tracking position they are as of, read in one statement."""

    @abstractmethod
    def delete_all(self) -> None:
        """Drop every row and every tracking position: the next run starts from position 0."""

    @abstractmethod
    def close(self) -> None: ...


class SQLiteMemberStatusView(SQLiteTrackingRecorder, MemberStatusView):
    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        if not datastore.single_row_tracking:
            raise ValueError("the member-status view needs single-row tracking")
        super().__init__(datastore, **kwargs)
        # Its own tracking table, so that other views in the same file keep their own position.
        self.insert_tracking_statement = (
            f"INSERT INTO {TRACKING_TABLE} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            f"WHERE {TRACKING_TABLE}.notification_id < :notification_id "
            "RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {TRACKING_TABLE} WHERE application_name=?"
        )

    def construct_create_table_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (application_name TEXT, "
            "notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {VIEW_NAME} (member_id TEXT PRIMARY KEY, "
            "status TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL)",
        ]

    def upsert(
        self,
        member_id: str,
        status: dict[str, Any],
        version: int,
        tracking: Tracking,
        updated_at: datetime,
    ) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                f"INSERT INTO {VIEW_NAME} (member_id, status, version, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (member_id) DO UPDATE SET "
                "status = excluded.status, version = excluded.version, "
                "updated_at = excluded.updated_at",
                (member_id, json.dumps(status), version, updated_at.isoformat()),
            )

    def row(self, member_id: str) -> MemberStatusRow | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {VIEW_NAME} WHERE member_id = ?", (member_id,))
            found = c.fetchone()
        return None if found is None else self._row(found)

    def all(self) -> Iterator[MemberStatusRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {VIEW_NAME} ORDER BY member_id")
            rows = c.fetchall()
        return (self._row(found) for found in rows)

    def rows_with_position(self, application_name: str) -> tuple[int | None, list[MemberStatusRow]]:
        with self.datastore.transaction(commit=False) as c:
            position = self._max_tracking_id(application_name, c)
            c.execute(f"SELECT * FROM {VIEW_NAME} ORDER BY member_id")
            return position, [self._row(found) for found in c.fetchall()]

    def delete_all(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {VIEW_NAME}")
            c.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name <> ?", (MIGRATION,))

    @staticmethod
    def _row(found: Any) -> MemberStatusRow:
        return MemberStatusRow(
            member_id=found["member_id"],
            status=json.loads(found["status"]),
            version=found["version"],
            updated_at=datetime.fromisoformat(found["updated_at"]),
        )

    def close(self) -> None:
        self.datastore.close()


class PostgresMemberStatusView(PostgresTrackingRecorder, MemberStatusView):
    def __init__(
        self, datastore: PostgresDatastore, *, tracking_table_name: str = TRACKING_TABLE
    ) -> None:
        if not datastore.single_row_tracking:
            raise ValueError("the member-status view needs single-row tracking")
        super().__init__(datastore, tracking_table_name=tracking_table_name)
        self.table = SQL("{0}.{1}").format(Identifier(datastore.schema), Identifier(VIEW_NAME))
        self.tracking = SQL("{0}.{1}").format(
            Identifier(datastore.schema), Identifier(tracking_table_name)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (member_id text PRIMARY KEY, "
                "status jsonb NOT NULL, version bigint NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(self.table)
        )
        self.upsert_statement = SQL(
            "INSERT INTO {0} (member_id, status, version, updated_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (member_id) DO UPDATE SET "
            "status = excluded.status, version = excluded.version, "
            "updated_at = excluded.updated_at"
        ).format(self.table)

    def upsert(
        self,
        member_id: str,
        status: dict[str, Any],
        version: int,
        tracking: Tracking,
        updated_at: datetime,
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(
                self.upsert_statement,
                (member_id, Jsonb(status), version, updated_at),
                prepare=True,
            )

    def row(self, member_id: str) -> MemberStatusRow | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT * FROM {0} WHERE member_id = %s").format(self.table), (member_id,)
            )
            found = curs.fetchone()
        return None if found is None else self._row(found)

    def all(self) -> Iterator[MemberStatusRow]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT * FROM {0} ORDER BY member_id").format(self.table))
            rows = curs.fetchall()
        return (self._row(found) for found in rows)

    def rows_with_position(self, application_name: str) -> tuple[int | None, list[MemberStatusRow]]:
        # One statement sees one snapshot, so the rows are exactly as of the position.
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT t.notification_id AS position, m.* FROM "
                    "(SELECT MAX(notification_id) AS notification_id FROM {0} "
                    "WHERE application_name = %s) t LEFT JOIN {1} m ON true "
                    "ORDER BY m.member_id"
                ).format(self.tracking, self.table),
                (application_name,),
            )
            rows = curs.fetchall()
        position = rows[0]["position"] if rows else None
        return position, [self._row(found) for found in rows if found["member_id"] is not None]

    def delete_all(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {0}").format(self.table))
            curs.execute(
                SQL("DELETE FROM {0} WHERE application_name <> %s").format(self.tracking),
                (MIGRATION,),
            )

    @staticmethod
    def _row(found: Any) -> MemberStatusRow:
        return MemberStatusRow(
            member_id=found["member_id"],
            status=found["status"],
            version=found["version"],
            updated_at=found["updated_at"],
        )

    def close(self) -> None:
        self.datastore.close()


def open_member_status_view(event_store_env: Mapping[str, str]) -> MemberStatusView:
    """The view in the event store's own database (its tables are created if missing)."""
    env = {**event_store_env, "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "2"}
    module = env.get("PERSISTENCE_MODULE", "")
    view_class: type[MemberStatusView]
    if module == "eventsourcing.sqlite":
        view_class = SQLiteMemberStatusView
    elif module == "eventsourcing.postgres":
        view_class = PostgresMemberStatusView
    else:
        raise ValueError(f"no member-status view for the persistence module {module!r}")
    factory = InfrastructureFactory[Any].construct(Environment(VIEW_NAME, env))
    view: MemberStatusView = factory.tracking_recorder(view_class)
    return view
