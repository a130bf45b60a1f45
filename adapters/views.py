"""The read models: member status (with referrals) and purchases, one implementation per database.

A view is a tracking recorder: ``write_batch`` writes the rows a batch of events changed and
the position of the batch's last event in one transaction, and the position only moves forward,
so every event is applied exactly once however often the worker is stopped and restarted.
``applied`` counts, per member, the events the projection applied to the row: with exactly-once
processing it equals the member's version.

Each member row keeps the status as of its latest event together with the instant until which
that status stays true (``valid_until``, from ``Member.status_changes_at``) and the program
version it was computed under, so a read can tell whether the stored status is still the answer.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

VIEW_NAME = "member_status"
PURCHASES = "purchase_view"
TRACKING_TABLE = f"{VIEW_NAME}_tracking"  # what the library's PostgreSQL factory names it
MIGRATION = "__migration__"  # the library's marker row in a single-row tracking table
# A column the current shape has and every earlier one lacked: without it the views are rebuilt.
# (``personal_data``: since the status rows hold the email and name sealed, not in plain text.)
SHAPE_MARKER = "personal_data"


@dataclass(frozen=True)
class MemberStatusRow:
    member_id: str
    status: dict[str, Any]
    version: int
    updated_at: datetime
    applied: int = 1
    program_version: int = 1
    valid_until: datetime | None = None
    referrals: list[dict[str, Any]] = field(default_factory=list)
    value: dict[str, Any] = field(default_factory=dict)  # the member's customer-value facts

    @property
    def personal_data(self) -> str:
        """ "held" or "erased": the email and name themselves are in ``status``, sealed."""
        return str(self.status["personal"]["state"])

    def holds_at(self, moment: datetime, program_version: int) -> bool:
        """Whether the stored status is the member's status at ``moment`` under that program
        (as of the view's position)."""
        return program_version == self.program_version and (
            self.valid_until is None or moment < self.valid_until
        )


@dataclass(frozen=True)
class PurchaseRow:
    order_id: str
    member_id: str
    purchase: dict[str, Any]


def dumps(value: Any) -> str:
    """JSON as the API writes it: times in RFC 3339 and money as strings."""
    return json.dumps(value, default=_plain, separators=(",", ":"))


def plain(value: Any) -> Any:
    """``value`` as it reads back from a view (the same types the API would write)."""
    return json.loads(dumps(value))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class MemberStatusView(TrackingRecorder, ABC):
    """Each member's status and referrals and each purchase, as of the view's position."""

    @abstractmethod
    def write_batch(
        self,
        members: Sequence[MemberStatusRow],
        purchases: Sequence[PurchaseRow],
        tracking: Tracking,
    ) -> None:
        """Write the rows and the tracking position in one transaction (IntegrityError if the
        position was already recorded: then nothing is written). A member row's ``applied``
        is how many events of this batch made it; the view adds it to the count it has."""

    @abstractmethod
    def row(self, member_id: str) -> MemberStatusRow | None: ...

    @abstractmethod
    def current_row(
        self, member_id: str, member: UUID, events_table: str
    ) -> MemberStatusRow | None:
        """The member's row if it has applied the member's latest event in ``events_table``
        (read in the same statement), else None: the ledger must answer."""

    @abstractmethod
    def purchase(self, order_id: str) -> PurchaseRow | None: ...

    @abstractmethod
    def all(self) -> Iterator[MemberStatusRow]:
        """Every member row, by member id."""

    @abstractmethod
    def all_purchases(self) -> Iterator[PurchaseRow]:
        """Every purchase row, by order id."""

    @abstractmethod
    def rows_with_position(
        self, application_name: str
    ) -> tuple[int | None, list[MemberStatusRow], list[PurchaseRow]]:
        """Every row and the tracking position they are as of, read in one snapshot."""

    @abstractmethod
    def delete_all(self) -> None:
        """Drop every row and every tracking position: the next run starts from position 0."""

    @abstractmethod
    def close(self) -> None: ...


MEMBER_COLUMNS = (
    "member_id, status, version, updated_at, applied, program_version, valid_until, referrals, "
    "value, personal_data"
)


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

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"PRAGMA table_info({VIEW_NAME})")
            columns = {found["name"] for found in c.fetchall()}
            if columns and SHAPE_MARKER not in columns:
                # An older shape: the views are rebuilt from the ledger from position 0.
                c.execute(f"DROP TABLE {VIEW_NAME}")
                c.execute(f"DROP TABLE IF EXISTS {TRACKING_TABLE}")
        super().create_table()

    def construct_create_table_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (application_name TEXT, "
            "notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {VIEW_NAME} (member_id TEXT PRIMARY KEY, "
            "status TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL, "
            "applied INTEGER NOT NULL, program_version INTEGER NOT NULL, valid_until TEXT, "
            "referrals TEXT NOT NULL, value TEXT NOT NULL, personal_data TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {PURCHASES} (order_id TEXT PRIMARY KEY, "
            "member_id TEXT NOT NULL, purchase TEXT NOT NULL)",
        ]

    def write_batch(
        self,
        members: Sequence[MemberStatusRow],
        purchases: Sequence[PurchaseRow],
        tracking: Tracking,
    ) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.executemany(
                f"INSERT INTO {VIEW_NAME} ({MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (member_id) DO UPDATE SET status = excluded.status, "
                "version = excluded.version, updated_at = excluded.updated_at, "
                f"applied = {VIEW_NAME}.applied + excluded.applied, "
                "program_version = excluded.program_version, "
                "valid_until = excluded.valid_until, referrals = excluded.referrals, "
                "value = excluded.value, personal_data = excluded.personal_data",
                [
                    (
                        row.member_id,
                        dumps(row.status),
                        row.version,
                        row.updated_at.isoformat(),
                        row.applied,
                        row.program_version,
                        None if row.valid_until is None else row.valid_until.isoformat(),
                        dumps(row.referrals),
                        dumps(row.value),
                        row.personal_data,
                    )
                    for row in members
                ],
            )
            c.executemany(
                f"INSERT INTO {PURCHASES} (order_id, member_id, purchase) VALUES (?, ?, ?) "
                "ON CONFLICT (order_id) DO UPDATE SET member_id = excluded.member_id, "
                "purchase = excluded.purchase",
                [(row.order_id, row.member_id, dumps(row.purchase)) for row in purchases],
            )

    def row(self, member_id: str) -> MemberStatusRow | None:
        found = self._one(VIEW_NAME, "member_id", member_id)
        return None if found is None else self._row(found)

    def purchase(self, order_id: str) -> PurchaseRow | None:
        found = self._one(PURCHASES, "order_id", order_id)
        return None if found is None else self._purchase(found)

    def current_row(
        self, member_id: str, member: UUID, events_table: str
    ) -> MemberStatusRow | None:
        with self.datastore.transaction(commit=False) as c:  # one read: row and log agree
            c.execute(
                f"SELECT v.*, (SELECT MAX(originator_version) FROM {events_table} "
                f"WHERE originator_id = ?) AS latest FROM {VIEW_NAME} v WHERE v.member_id = ?",
                (member.hex, member_id),
            )
            found = c.fetchone()
        if found is None or found["latest"] != found["version"]:
            return None
        return self._row(found)

    def _one(self, table: str, key: str, value: str) -> Any:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {table} WHERE {key} = ?", (value,))
            return c.fetchone()

    def all(self) -> Iterator[MemberStatusRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {VIEW_NAME} ORDER BY member_id")
            rows = c.fetchall()
        return (self._row(found) for found in rows)

    def all_purchases(self) -> Iterator[PurchaseRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT * FROM {PURCHASES} ORDER BY order_id")
            rows = c.fetchall()
        return (self._purchase(found) for found in rows)

    def rows_with_position(
        self, application_name: str
    ) -> tuple[int | None, list[MemberStatusRow], list[PurchaseRow]]:
        with self.datastore.transaction(commit=False) as c:  # one read transaction
            position = self._max_tracking_id(application_name, c)
            c.execute(f"SELECT * FROM {VIEW_NAME} ORDER BY member_id")
            members = [self._row(found) for found in c.fetchall()]
            c.execute(f"SELECT * FROM {PURCHASES} ORDER BY order_id")
            purchases = [self._purchase(found) for found in c.fetchall()]
        return position, members, purchases

    def delete_all(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {VIEW_NAME}")
            c.execute(f"DELETE FROM {PURCHASES}")
            c.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name <> ?", (MIGRATION,))

    @staticmethod
    def _row(found: Any) -> MemberStatusRow:
        valid_until = found["valid_until"]
        return MemberStatusRow(
            member_id=found["member_id"],
            status=json.loads(found["status"]),
            version=found["version"],
            updated_at=datetime.fromisoformat(found["updated_at"]),
            applied=found["applied"],
            program_version=found["program_version"],
            valid_until=None if valid_until is None else datetime.fromisoformat(valid_until),
            referrals=json.loads(found["referrals"]),
            value=json.loads(found["value"]),
        )

    @staticmethod
    def _purchase(found: Any) -> PurchaseRow:
        return PurchaseRow(found["order_id"], found["member_id"], json.loads(found["purchase"]))

    def close(self) -> None:
        self.datastore.close()


class PostgresMemberStatusView(PostgresTrackingRecorder, MemberStatusView):
    def __init__(
        self, datastore: PostgresDatastore, *, tracking_table_name: str = TRACKING_TABLE
    ) -> None:
        if not datastore.single_row_tracking:
            raise ValueError("the member-status view needs single-row tracking")
        super().__init__(datastore, tracking_table_name=tracking_table_name)
        schema = Identifier(datastore.schema)
        self.table = SQL("{0}.{1}").format(schema, Identifier(VIEW_NAME))
        self.purchases = SQL("{0}.{1}").format(schema, Identifier(PURCHASES))
        self.tracking = SQL("{0}.{1}").format(schema, Identifier(tracking_table_name))
        select = "SELECT * FROM {0} WHERE {1} = %s"  # rendered once: psycopg converts it once
        self.select_member = SQL(select).format(self.table, Identifier("member_id")).as_bytes(None)
        self._current_statements: dict[str, bytes] = {}
        self.select_purchase = (
            SQL(select).format(self.purchases, Identifier("order_id")).as_bytes(None)
        )
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (member_id text PRIMARY KEY, "
                    "status jsonb NOT NULL, version bigint NOT NULL, "
                    "updated_at timestamptz NOT NULL, applied bigint NOT NULL, "
                    "program_version bigint NOT NULL, valid_until timestamptz, "
                    "referrals jsonb NOT NULL, value jsonb NOT NULL, personal_data text NOT NULL)"
                ).format(self.table),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (order_id text PRIMARY KEY, "
                    "member_id text NOT NULL, purchase jsonb NOT NULL)"
                ).format(self.purchases),
            ]
        )
        # One statement per table and batch: the rows travel as one JSON document (one fast
        # json.dumps), taken apart by the server.
        self.upsert_statement = SQL(
            "INSERT INTO {0} (" + MEMBER_COLUMNS + ") "
            "SELECT m, s, v, u, a, p, t, r, f, d FROM jsonb_to_recordset(%s::jsonb) AS "
            "x(m text, s jsonb, v bigint, u timestamptz, a bigint, p bigint, t timestamptz, "
            "r jsonb, f jsonb, d text) "
            "ON CONFLICT (member_id) DO UPDATE SET status = excluded.status, "
            "version = excluded.version, updated_at = excluded.updated_at, "
            "applied = {0}.applied + excluded.applied, "
            "program_version = excluded.program_version, "
            "valid_until = excluded.valid_until, referrals = excluded.referrals, "
            "value = excluded.value, personal_data = excluded.personal_data"
        ).format(self.table)
        self.purchase_statement = SQL(
            "INSERT INTO {0} (order_id, member_id, purchase) "
            "SELECT o, m, p FROM jsonb_to_recordset(%s::jsonb) AS x(o text, m text, p jsonb) "
            "ON CONFLICT (order_id) DO UPDATE SET member_id = excluded.member_id, "
            "purchase = excluded.purchase"
        ).format(self.purchases)

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (self.datastore.schema, VIEW_NAME),
            )
            columns = {found["column_name"] for found in curs.fetchall()}
            if columns and SHAPE_MARKER not in columns:
                # An older shape: the views are rebuilt from the ledger from position 0.
                curs.execute(SQL("DROP TABLE {0}").format(self.table))
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(self.tracking))
        super().create_table()

    def write_batch(
        self,
        members: Sequence[MemberStatusRow],
        purchases: Sequence[PurchaseRow],
        tracking: Tracking,
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            if members:
                rows = [
                    {
                        "m": row.member_id,
                        "s": row.status,
                        "v": row.version,
                        "u": row.updated_at,
                        "a": row.applied,
                        "p": row.program_version,
                        "t": row.valid_until,
                        "r": row.referrals,
                        "f": row.value,
                        "d": row.personal_data,
                    }
                    for row in members
                ]
                curs.execute(self.upsert_statement, (dumps(rows),))
            if purchases:
                orders = [
                    {"o": row.order_id, "m": row.member_id, "p": row.purchase} for row in purchases
                ]
                curs.execute(self.purchase_statement, (dumps(orders),))

    def row(self, member_id: str) -> MemberStatusRow | None:
        found = self._one(self.select_member, member_id)
        return None if found is None else self._row(found)

    def purchase(self, order_id: str) -> PurchaseRow | None:
        found = self._one(self.select_purchase, order_id)
        return None if found is None else self._purchase(found)

    def current_row(
        self, member_id: str, member: UUID, events_table: str
    ) -> MemberStatusRow | None:
        statement = self._current_statements.get(events_table)
        if statement is None:
            statement = (
                SQL(
                    "SELECT v.*, (SELECT max(originator_version) FROM {0}.{1} "
                    "WHERE originator_id = %s) AS latest FROM {2} v WHERE v.member_id = %s"
                )
                .format(Identifier(self.datastore.schema), Identifier(events_table), self.table)
                .as_bytes(None)
            )
            self._current_statements[events_table] = statement
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (member, member_id), prepare=True)
            found = curs.fetchone()
        if found is None or found["latest"] != found["version"]:
            return None
        return self._row(found)

    def _one(self, statement: bytes, value: str) -> Any:
        # One statement on the pool's autocommit connection: a transaction around it would
        # add a round trip for BEGIN and one for ROLLBACK, each a wait for the CPU and the
        # GIL under load (they were most of a status read's time).
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (value,), prepare=True)
            return curs.fetchone()

    def all(self) -> Iterator[MemberStatusRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT * FROM {0} ORDER BY member_id").format(self.table))
            rows = curs.fetchall()
        return (self._row(found) for found in rows)

    def all_purchases(self) -> Iterator[PurchaseRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT * FROM {0} ORDER BY order_id").format(self.purchases))
            rows = curs.fetchall()
        return (self._purchase(found) for found in rows)

    def rows_with_position(
        self, application_name: str
    ) -> tuple[int | None, list[MemberStatusRow], list[PurchaseRow]]:
        # One repeatable-read transaction sees one snapshot: the rows are as of the position.
        with self.datastore.get_connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with conn.cursor() as curs:
                curs.execute(
                    SQL(
                        "SELECT MAX(notification_id) AS position FROM {0} "
                        "WHERE application_name = %s"
                    ).format(self.tracking),
                    (application_name,),
                )
                found = curs.fetchone()
                position = None if found is None else found["position"]
                curs.execute(SQL("SELECT * FROM {0} ORDER BY member_id").format(self.table))
                members = [self._row(row) for row in curs.fetchall()]
                curs.execute(SQL("SELECT * FROM {0} ORDER BY order_id").format(self.purchases))
                purchases = [self._purchase(row) for row in curs.fetchall()]
        return position, members, purchases

    def delete_all(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {0}").format(self.table))
            curs.execute(SQL("DELETE FROM {0}").format(self.purchases))
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
            applied=found["applied"],
            program_version=found["program_version"],
            valid_until=found["valid_until"],
            referrals=found["referrals"],
            value=found["value"],
        )

    @staticmethod
    def _purchase(found: Any) -> PurchaseRow:
        return PurchaseRow(found["order_id"], found["member_id"], found["purchase"])

    def close(self) -> None:
        self.datastore.close()


def open_member_status_view(event_store_env: Mapping[str, str]) -> MemberStatusView:
    """The views in the event store's own database (their tables are created if missing)."""
    env = {**event_store_env, "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "6"}
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
