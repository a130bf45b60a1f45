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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from domain.analytics import difference

VIEW_NAME = "member_status"
PURCHASES = "purchase_view"
TRACKING_TABLE = f"{VIEW_NAME}_tracking"  # what the library's PostgreSQL factory names it
MIGRATION = "__migration__"  # the library's marker row in a single-row tracking table
TOTALS = f"{VIEW_NAME}_totals"
# A column the current shape has and every earlier one lacked: without it the views are rebuilt.
# (``refresh_at``: since the rows keep the analytics' counters and the totals table sums them.)
SHAPE_MARKER = "refresh_at"
# The totals table keeps three kinds of counters: the summary's, and two histograms of the
# members with purchases (by number of purchases, by day of the last one) that rank them.
SUMMARY, FREQUENCY, LAST_DAY, LAST_HOUR, NET = "s", "f", "l", "h", "n"
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
CHUNK = 500  # members per statement where SQLite binds each one
# The rows awaiting a time-driven refresh are counted up to this many: an index range that
# stops, so a summary read stays one read of the counters when the worker is far behind.
PENDING_COUNTED = 1000


def kind_of(key: str) -> str:
    if key.startswith(("netc:", "nets:")):
        return NET
    if key.startswith("freq:"):
        return FREQUENCY
    if key.startswith("last:"):
        return LAST_DAY
    if key.startswith("hour:"):
        return LAST_HOUR
    return SUMMARY


def frequency_key(purchases: int) -> str:
    return f"freq:{purchases:010d}"  # zero-padded: the keys sort as the numbers do


def net_bucket(net: int) -> tuple[int, int]:
    """The bucket [low, high) of a net contribution (millionths): its two leading digits."""
    if net == 0:
        return 0, 1
    size = abs(net)
    step = 10 ** max(len(str(size)) - 2, 0)
    base = size // step * step
    return (base, base + step) if net > 0 else (1 - base - step, 1 - base)


def net_keys(net: int) -> dict[str, int]:
    """A buyer's place in the histogram of net contributions: a count and the sum."""
    low, high = net_bucket(net)
    return {f"netc:{low}:{high}": 1, f"nets:{low}:{high}": net}


def last_day_key(moment: datetime) -> str:
    return f"last:{moment.astimezone(UTC).date().isoformat()}"


def last_hour_key(moment: datetime) -> str:
    return f"hour:{moment.astimezone(UTC).strftime('%Y-%m-%dT%H')}"


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
    # What the member adds to the totals as of ``updated_at`` (domain.analytics.contribution,
    # plus its place in the value histograms), and the instant from which that may change with
    # time alone (``refresh_at``: the worker's time-driven refresh recomputes it then).
    figures: dict[str, int] = field(default_factory=dict)
    refresh_at: datetime | None = None
    net_key: int = 0  # net contribution in millionths: the value page's order
    last_purchase_at: datetime | None = None

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

    @property
    def buyer(self) -> int:
        return 1 if self.figures.get("buyers") else 0


@dataclass(frozen=True)
class PurchaseRow:
    order_id: str
    member_id: str
    purchase: dict[str, Any]


@dataclass(frozen=True)
class DueRow:
    """A row whose counters may have changed with time alone since they were computed."""

    member_id: str
    version: int
    program_version: int
    refresh_at: datetime


@dataclass(frozen=True)
class Refresh:
    """A due row's counters recomputed at a later instant (written only if the row is still
    the one they were computed from: the same version and refresh instant)."""

    member_id: str
    version: int
    was: datetime
    figures: dict[str, int]
    refresh_at: datetime | None


@dataclass(frozen=True)
class SummaryTotals:
    position: int | None
    totals: dict[str, int]
    behind: int  # rows whose time-driven refresh is due and not done yet (up to 1,000)


@dataclass(frozen=True)
class ValueEntry:
    """A member on a value page, with how many buyers are strictly better than it by net
    contribution, recency and frequency (None for a member without purchases)."""

    value: dict[str, Any]
    stage: str
    better: tuple[int, int, int] | None


@dataclass(frozen=True)
class ValuePage:
    position: int
    buyers: int
    top_fifth: int  # the net contribution (millionths) of the best ceil(N / 5) buyers
    total: int  # the buyers' whole net contribution (millionths)
    entries: list[ValueEntry]


def stage_in(figures: Mapping[str, int]) -> str:
    return next((key[6:] for key in figures if key.startswith("stage:")), "prospect")


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

    # The analytics: totals kept by every write, and the value page ranked by the database.

    @abstractmethod
    def summary_totals(self, application_name: str, now: datetime) -> SummaryTotals:
        """The summary's counters, the position they are as of, and how many rows are due a
        time-driven refresh at ``now``, read in one snapshot."""

    @abstractmethod
    def totals(self) -> dict[str, int]:
        """Every counter of every kind (the sums of the rows' ``figures``)."""

    @abstractmethod
    def due_rows(self, now: datetime, limit: int) -> list[DueRow]:
        """Up to ``limit`` rows whose counters may have changed with time by ``now``."""

    def refresh(self, refreshes: Sequence[Refresh]) -> int:
        """Write recomputed counters and their difference to the totals, in one transaction;
        a row changed since it was read is left for the next pass. How many were written."""
        if not refreshes:
            return 0
        with self.datastore.transaction(commit=True) as c:
            current = self._current(c, [r.member_id for r in refreshes])
            kept = [
                r for r in refreshes
                if r.member_id in current
                and current[r.member_id][:2] == (r.version, self._time(r.was))
            ]  # fmt: skip
            self._set_figures(c, kept)
            self._add_totals(c, changes((r.figures, current[r.member_id][2]) for r in kept))
        return len(kept)

    datastore: Any

    @abstractmethod
    def _current(self, c: Any, member_ids: Sequence[str]) -> dict[str, tuple[int, Any, Any]]:
        """Each member's row's version, refresh instant (as stored) and figures, locked for
        the transaction where the database can."""

    @abstractmethod
    def _set_figures(self, c: Any, refreshes: Sequence[Refresh]) -> None: ...

    @abstractmethod
    def _add_totals(self, c: Any, changes: Sequence[tuple[str, str, int]]) -> None: ...

    def _old_figures(self, c: Any, member_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        return {member: found[2] for member, found in self._current(c, member_ids).items()}

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Any]:
        """A cursor reading one consistent snapshot."""

    members_table: str
    totals_table: str
    tracking_table: str

    @staticmethod
    def _sql(text: str) -> str:
        return text

    @staticmethod
    def _time(moment: datetime) -> Any:
        return moment

    @staticmethod
    def _json(found: Any) -> Any:
        return found

    def value_page(
        self,
        application_name: str,
        value_class: str | None,
        after: int,
        limit: int,
        now: datetime,
    ) -> ValuePage | None:
        """``limit`` members from the ``after``-th, best net contribution first (then the
        members without purchases), of one value class or all, each with its ranks counted by
        the database; None if the views were never built.

        Buyers are ordered by net contribution: a value class is a run of that order (ties
        share the better class, a negative contribution is D). Where a rank or a place in that
        order is needed, the histogram of net contributions (a few hundred buckets, two
        significant digits each) says which bucket holds it and the index is read inside that
        bucket only; the ranks by recency and frequency are sums over their histograms. So no
        statement reads a number of rows that grows with the number of members.
        """
        q, totals = self._sql, self.totals_table
        with self._snapshot() as c:
            c.execute(
                q(f"SELECT MAX(notification_id) AS n FROM {self.tracking_table} "
                  "WHERE application_name = ?"),
                (application_name,),
            )  # fmt: skip
            found = c.fetchone()
            position = None if found is None else found["n"]
            if position is None:
                return None
            c.execute(
                q(f"SELECT key, value FROM {totals} WHERE kind = ? "
                  "AND key IN ('buyers', 'net', 'negative')"),
                (SUMMARY,),
            )  # fmt: skip
            sums = {row["key"]: int(row["value"]) for row in c.fetchall()}
            buyers = sums.get("buyers", 0)
            histogram = self._net_histogram(c)
            if value_class is None:
                start, count = after, limit
            else:
                gains = buyers - sums.get("negative", 0)  # the buyers with net >= 0 come first

                def end(quarter: int) -> int:
                    """Where the buyers ranked in the first ``quarter`` quarters end."""
                    if quarter == 0:
                        return 0
                    if quarter == 4:
                        return buyers
                    k = (quarter * buyers + 3) // 4  # ceil(q x N / 4)
                    if k <= 0:
                        return 0
                    if k >= buyers:
                        return min(buyers, gains)
                    return min(self._at_least(c, histogram, self._net_at(c, histogram, k - 1)),
                               gains)  # fmt: skip

                index = "ABCD".index(value_class)  # only this class's two ends are read
                low = end(index)
                high = max(low, end(index + 1))
                start, count = low + after, max(0, min(limit, high - low - after))
            rows = self._page_rows(c, histogram, buyers, start, count)
            top = self._top_sum(c, histogram, (buyers + 4) // 5)
            return self._ranked(c, histogram, position, buyers, sums.get("net", 0), top,
                                start, rows, now)  # fmt: skip

    def _net_histogram(self, c: Any) -> list[list[int]]:
        """[low, high, buyers, their net sum] per bucket of net contribution, best first."""
        c.execute(self._sql(f"SELECT key, value FROM {self.totals_table} WHERE kind = ?"), (NET,))
        buckets: dict[tuple[int, int], list[int]] = {}
        for row in c.fetchall():
            name, low, high = row["key"].split(":")
            bucket = buckets.setdefault((int(low), int(high)), [int(low), int(high), 0, 0])
            bucket[2 if name == "netc" else 3] = int(row["value"])
        return sorted((b for b in buckets.values() if b[2]), reverse=True)

    @staticmethod
    def _bucket_of(histogram: list[list[int]], place: int) -> tuple[list[int], int]:
        """The bucket holding the ``place``-th buyer (0-based), and how many come before it."""
        before = 0
        for bucket in histogram:
            if place < before + bucket[2]:
                return bucket, before
            before += bucket[2]
        raise LookupError(f"no buyer at place {place}")

    def _net_at(self, c: Any, histogram: list[list[int]], place: int) -> int:
        bucket, before = self._bucket_of(histogram, place)
        c.execute(
            self._sql(
                f"SELECT net_key FROM {self.members_table} WHERE buyer = 1 AND net_key < ? "
                "ORDER BY buyer DESC, net_key DESC, member_id LIMIT 1 OFFSET ?"
            ),
            (bucket[1], place - before),
        )
        return int(c.fetchone()["net_key"])

    def _at_least(
        self, c: Any, histogram: list[list[int]], net: int, strictly: bool = False
    ) -> int:
        """How many buyers have a net contribution of at least (or above) ``net``."""
        count = sum(b[2] for b in histogram if b[0] > net)
        inside = next((b for b in histogram if b[0] <= net < b[1]), None)
        if inside is not None:
            c.execute(
                self._sql(
                    f"SELECT count(*) AS n FROM {self.members_table} WHERE buyer = 1 AND "
                    f"net_key {'>' if strictly else '>='} ? AND net_key < ?"
                ),
                (net, inside[1]),
            )
            count += int(c.fetchone()["n"])
        return count

    def _top_sum(self, c: Any, histogram: list[list[int]], best: int) -> int:
        """The net contribution of the ``best`` best buyers."""
        total = before = 0
        for _low, high, count, summed in histogram:
            if before + count <= best:
                total, before = total + summed, before + count
                continue
            if best > before:
                c.execute(
                    self._sql(
                        f"SELECT coalesce(sum(net_key), 0) AS n FROM (SELECT net_key FROM "
                        f"{self.members_table} WHERE buyer = 1 AND net_key < ? "
                        "ORDER BY buyer DESC, net_key DESC LIMIT ?) best"
                    ),
                    (high, best - before),
                )
                total += int(c.fetchone()["n"])
            break
        return total

    def _page_rows(
        self, c: Any, histogram: list[list[int]], buyers: int, start: int, count: int
    ) -> list[Any]:
        """``count`` rows from the ``start``-th in the order: buyers by net contribution, then
        the others."""
        columns = f"SELECT member_id, value, figures, net_key FROM {self.members_table}"
        order = "ORDER BY buyer DESC, net_key DESC, member_id LIMIT ? OFFSET ?"
        rows: list[Any] = []
        if count and start < buyers:
            bucket, before = self._bucket_of(histogram, start)
            c.execute(
                self._sql(f"{columns} WHERE buyer = 1 AND net_key < ? {order}"),
                (bucket[1], min(count, buyers - start), start - before),
            )
            rows = list(c.fetchall())
        if len(rows) < count:
            c.execute(
                self._sql(f"{columns} WHERE buyer = 0 {order}"),
                (count - len(rows), max(0, start - buyers)),
            )
            rows += c.fetchall()
        return rows

    time_parameter = "?"  # how a statement takes an instant where no column gives its type

    def _fewer_days(self, c: Any, days: Sequence[int], now: datetime) -> dict[int, int]:
        """For each whole number of days, how many buyers bought last fewer days ago: every
        buyer whose last purchase is after ``now`` - days. Counted from the histogram by day
        (the later days), by hour (the later hours of that day) and, within that hour, from
        the index: two statements whatever the number of members."""
        if not days:
            return {}
        c.execute(
            self._sql(f"SELECT key, value FROM {self.totals_table} WHERE kind = ?"), (LAST_DAY,)
        )
        by_day = sorted((row["key"], int(row["value"])) for row in c.fetchall())
        rows, params = [], []
        later: dict[int, int] = {}
        for d in days:
            since = (now - d * DAY).astimezone(UTC)
            day = last_day_key(since)
            later[d] = sum(n for key, n in by_day if key > day)
            hour = since.replace(minute=0, second=0, microsecond=0)
            rows.append(f"({d}, ?, ?, {self.time_parameter}, {self.time_parameter})")
            params += [last_hour_key(since), f"hour:{since.date().isoformat()}T99",
                       self._time(since), self._time(hour + HOUR)]  # fmt: skip
        c.execute(
            self._sql(
                f"WITH v(d, k, e, lo, hi) AS (VALUES {', '.join(rows)}) SELECT v.d AS d, "
                f"(SELECT coalesce(sum(value), 0) FROM {self.totals_table} "
                f"WHERE kind = '{LAST_HOUR}' AND key > v.k AND key < v.e) + (SELECT count(*) "
                f"FROM {self.members_table} WHERE last_purchase_at > v.lo "
                "AND last_purchase_at < v.hi) AS n FROM v"
            ),
            params,
        )
        return {int(row["d"]): later[int(row["d"])] + int(row["n"]) for row in c.fetchall()}

    def _ranked(
        self,
        c: Any,
        histogram: list[list[int]],
        position: int,
        buyers: int,
        total: int,
        top: int,
        start: int,
        rows: Sequence[Any],
        now: datetime,
    ) -> ValuePage:
        found = [(self._json(row["value"]), self._json(row["figures"]), int(row["net_key"]))
                 for row in rows]  # fmt: skip
        bought = [(i, facts, net) for i, (facts, figures, net) in enumerate(found)
                  if figures.get("buyers")]  # fmt: skip
        first_better = self._at_least(c, histogram, bought[0][2], strictly=True) if bought else 0
        days: dict[int, int] = {}
        for i, facts, _ in bought:
            last = datetime.fromisoformat(facts["last_purchase_at"])
            days[i] = max((now - last) // DAY, 0)
        by_recency = self._fewer_days(c, sorted(set(days.values()) - {0}), now)
        c.execute(
            self._sql(f"SELECT key, value FROM {self.totals_table} WHERE kind = ?"), (FREQUENCY,)
        )
        frequencies = {int(row["key"][5:]): int(row["value"]) for row in c.fetchall()}
        by_frequency = {
            purchases: sum(n for more, n in frequencies.items() if more > purchases)
            for purchases in {facts["purchases"] for _, facts, _ in bought}
        }
        entries: list[ValueEntry] = []
        first_of: dict[int, int] = {}  # a net contribution's first index on the page
        for i, (facts, figures, net) in enumerate(found):
            better: tuple[int, int, int] | None = None
            if figures.get("buyers"):
                first = first_of.setdefault(net, i)
                by_net = first_better if net == bought[0][2] else start + first
                d = days[i]
                better = (by_net, by_recency.get(d, 0), by_frequency[facts["purchases"]])
            entries.append(ValueEntry(facts, stage_in(figures), better))
        return ValuePage(position, buyers, top, total, entries)


MEMBER_COLUMNS = (
    "member_id, status, version, updated_at, applied, program_version, valid_until, referrals, "
    "value, personal_data, figures, refresh_at, buyer, net_key, last_purchase_at"
)


def iso(moment: datetime) -> str:
    """An instant as SQLite keeps the ones it compares: UTC, to the microsecond (so that the
    text sorts as the instants do)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def optional_iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def changes(
    pairs: Iterable[tuple[Mapping[str, int], Mapping[str, int]]],
) -> list[tuple[str, str, int]]:
    """What replacing each (new, old) pair of figures adds to the totals, as (kind, key, count),
    sorted (so concurrent writers lock counters in one order)."""
    changed: Counter[str] = Counter()
    for new, old in pairs:
        for key, count in difference(new, old).items():
            changed[key] += count
    return sorted((kind_of(key), key, count) for key, count in changed.items() if count)


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
                c.execute(f"DROP TABLE IF EXISTS {TOTALS}")
        super().create_table()

    def construct_create_table_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (application_name TEXT, "
            "notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {VIEW_NAME} (member_id TEXT PRIMARY KEY, "
            "status TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL, "
            "applied INTEGER NOT NULL, program_version INTEGER NOT NULL, valid_until TEXT, "
            "referrals TEXT NOT NULL, value TEXT NOT NULL, personal_data TEXT NOT NULL, "
            "figures TEXT NOT NULL, refresh_at TEXT, buyer INTEGER NOT NULL, "
            "net_key INTEGER NOT NULL, last_purchase_at TEXT)",
            f"CREATE INDEX IF NOT EXISTS {VIEW_NAME}_value ON {VIEW_NAME} "
            "(buyer DESC, net_key DESC, member_id)",
            f"CREATE INDEX IF NOT EXISTS {VIEW_NAME}_refresh ON {VIEW_NAME} (refresh_at)",
            f"CREATE INDEX IF NOT EXISTS {VIEW_NAME}_last ON {VIEW_NAME} (last_purchase_at)",
            f"CREATE TABLE IF NOT EXISTS {TOTALS} (kind TEXT, key TEXT, value INTEGER NOT NULL, "
            "PRIMARY KEY (kind, key)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {PURCHASES} (order_id TEXT PRIMARY KEY, "
            "member_id TEXT NOT NULL, purchase TEXT NOT NULL)",
        ]

    members_table = VIEW_NAME
    totals_table = TOTALS
    tracking_table = TRACKING_TABLE

    @staticmethod
    def _time(moment: datetime) -> Any:
        return iso(moment)

    @staticmethod
    def _json(found: Any) -> Any:
        return json.loads(found)

    def _snapshot(self) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=False)

    def _current(self, c: Any, member_ids: Sequence[str]) -> dict[str, tuple[int, Any, Any]]:
        found: dict[str, tuple[int, Any, Any]] = {}
        for i in range(0, len(member_ids), CHUNK):
            chunk = member_ids[i : i + CHUNK]
            c.execute(
                f"SELECT member_id, version, refresh_at, figures FROM {VIEW_NAME} "
                f"WHERE member_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for row in c.fetchall():
                found[row["member_id"]] = (
                    row["version"], row["refresh_at"], json.loads(row["figures"])
                )  # fmt: skip
        return found

    def _set_figures(self, c: Any, refreshes: Sequence[Refresh]) -> None:
        c.executemany(
            f"UPDATE {VIEW_NAME} SET figures = ?, refresh_at = ? WHERE member_id = ?",
            [(dumps(r.figures), optional_iso(r.refresh_at), r.member_id) for r in refreshes],
        )

    def _add_totals(self, c: Any, changes: Sequence[tuple[str, str, int]]) -> None:
        c.executemany(
            f"INSERT INTO {TOTALS} (kind, key, value) VALUES (?, ?, ?) ON CONFLICT (kind, key) "
            f"DO UPDATE SET value = {TOTALS}.value + excluded.value",
            changes,
        )

    def summary_totals(self, application_name: str, now: datetime) -> SummaryTotals:
        with self.datastore.transaction(commit=False) as c:
            position = self._max_tracking_id(application_name, c)
            c.execute(f"SELECT key, value FROM {TOTALS} WHERE kind = ?", (SUMMARY,))
            totals = {row["key"]: row["value"] for row in c.fetchall()}
            c.execute(
                f"SELECT count(*) AS n FROM (SELECT refresh_at FROM {VIEW_NAME} "
                f"WHERE refresh_at <= ? ORDER BY refresh_at LIMIT {PENDING_COUNTED})",
                (iso(now),),
            )
            behind = c.fetchone()["n"]
        return SummaryTotals(position, totals, behind)

    def totals(self) -> dict[str, int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT key, value FROM {TOTALS} WHERE value <> 0")
            return {row["key"]: row["value"] for row in c.fetchall()}

    def due_rows(self, now: datetime, limit: int) -> list[DueRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT member_id, version, program_version, refresh_at FROM {VIEW_NAME} "
                "WHERE refresh_at <= ? ORDER BY refresh_at LIMIT ?",
                (iso(now), limit),
            )
            rows = c.fetchall()
        return [
            DueRow(row["member_id"], row["version"], row["program_version"],
                   datetime.fromisoformat(row["refresh_at"]))
            for row in rows
        ]  # fmt: skip

    def write_batch(
        self,
        members: Sequence[MemberStatusRow],
        purchases: Sequence[PurchaseRow],
        tracking: Tracking,
    ) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            old = self._old_figures(c, [row.member_id for row in members])
            c.executemany(
                f"INSERT INTO {VIEW_NAME} ({MEMBER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (member_id) DO UPDATE SET status = excluded.status, "
                "version = excluded.version, updated_at = excluded.updated_at, "
                f"applied = {VIEW_NAME}.applied + excluded.applied, "
                "program_version = excluded.program_version, "
                "valid_until = excluded.valid_until, referrals = excluded.referrals, "
                "value = excluded.value, personal_data = excluded.personal_data, "
                "figures = excluded.figures, refresh_at = excluded.refresh_at, "
                "buyer = excluded.buyer, net_key = excluded.net_key, "
                "last_purchase_at = excluded.last_purchase_at",
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
                        dumps(row.figures),
                        optional_iso(row.refresh_at),
                        row.buyer,
                        row.net_key,
                        optional_iso(row.last_purchase_at),
                    )
                    for row in members
                ],
            )
            self._add_totals(
                c, changes((row.figures, old.get(row.member_id, {})) for row in members)
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
            c.execute(f"DELETE FROM {TOTALS}")
            c.execute(f"DELETE FROM {PURCHASES}")
            c.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name <> ?", (MIGRATION,))

    @staticmethod
    def _row(found: Any) -> MemberStatusRow:
        valid_until = found["valid_until"]
        refresh_at, last = found["refresh_at"], found["last_purchase_at"]
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
            figures=json.loads(found["figures"]),
            refresh_at=None if refresh_at is None else datetime.fromisoformat(refresh_at),
            net_key=found["net_key"],
            last_purchase_at=None if last is None else datetime.fromisoformat(last),
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
        self.totals_sql = SQL("{0}.{1}").format(schema, Identifier(TOTALS))
        quoted = '"' + datastore.schema.replace('"', '""') + '".'
        self.members_table = quoted + VIEW_NAME
        self.totals_table = quoted + TOTALS
        self.tracking_table = quoted + tracking_table_name
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
                    "referrals jsonb NOT NULL, value jsonb NOT NULL, personal_data text NOT NULL, "
                    "figures jsonb NOT NULL, refresh_at timestamptz, buyer smallint NOT NULL, "
                    "net_key bigint NOT NULL, last_purchase_at timestamptz)"
                ).format(self.table),
                SQL(
                    "CREATE INDEX IF NOT EXISTS {1} ON {0} (buyer DESC, net_key DESC, member_id)"
                ).format(self.table, Identifier(f"{VIEW_NAME}_value")),
                SQL("CREATE INDEX IF NOT EXISTS {1} ON {0} (refresh_at)").format(
                    self.table, Identifier(f"{VIEW_NAME}_refresh")
                ),
                SQL("CREATE INDEX IF NOT EXISTS {1} ON {0} (last_purchase_at)").format(
                    self.table, Identifier(f"{VIEW_NAME}_last")
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {0} (kind text, key text, value bigint NOT NULL, "
                    "PRIMARY KEY (kind, key))"
                ).format(self.totals_sql),
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
            "SELECT m, s, v, u, a, p, t, r, f, d, g, w, b, n, l "
            "FROM jsonb_to_recordset(%s::jsonb) AS "
            "x(m text, s jsonb, v bigint, u timestamptz, a bigint, p bigint, t timestamptz, "
            "r jsonb, f jsonb, d text, g jsonb, w timestamptz, b smallint, n bigint, "
            "l timestamptz) "
            "ON CONFLICT (member_id) DO UPDATE SET status = excluded.status, "
            "version = excluded.version, updated_at = excluded.updated_at, "
            "applied = {0}.applied + excluded.applied, "
            "program_version = excluded.program_version, "
            "valid_until = excluded.valid_until, referrals = excluded.referrals, "
            "value = excluded.value, personal_data = excluded.personal_data, "
            "figures = excluded.figures, refresh_at = excluded.refresh_at, "
            "buyer = excluded.buyer, net_key = excluded.net_key, "
            "last_purchase_at = excluded.last_purchase_at"
        ).format(self.table)
        self.current_statement = SQL(
            "SELECT member_id, version, refresh_at, figures FROM {0} "
            "WHERE member_id = ANY(%s) ORDER BY member_id FOR UPDATE"
        ).format(self.table)
        self.add_totals_statement = SQL(
            "INSERT INTO {0} (kind, key, value) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
            "ON CONFLICT (kind, key) DO UPDATE SET value = {0}.value + excluded.value"
        ).format(self.totals_sql)
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
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(self.totals_sql))
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
                old = self._old_figures(curs, [row.member_id for row in members])
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
                        "g": row.figures,
                        "w": row.refresh_at,
                        "b": row.buyer,
                        "n": row.net_key,
                        "l": row.last_purchase_at,
                    }
                    for row in members
                ]
                curs.execute(self.upsert_statement, (dumps(rows),))
                self._add_totals(
                    curs, changes((row.figures, old.get(row.member_id, {})) for row in members)
                )
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
            curs.execute(SQL("DELETE FROM {0}").format(self.totals_sql))
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
            figures=found["figures"],
            refresh_at=found["refresh_at"],
            net_key=found["net_key"],
            last_purchase_at=found["last_purchase_at"],
        )

    @staticmethod
    def _purchase(found: Any) -> PurchaseRow:
        return PurchaseRow(found["order_id"], found["member_id"], found["purchase"])

    def close(self) -> None:
        self.datastore.close()

    time_parameter = "CAST(? AS timestamptz)"

    @staticmethod
    def _sql(text: str) -> str:
        return text.replace("?", "%s")

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.transaction():
            # Plans made for the values given: a generic plan of a range over the index (which
            # psycopg's prepared statements would come to) reads every row. And no JIT: the
            # recency statement's estimate (a subplan per row of its VALUES) passes JIT's
            # threshold, and compiling it took 146 ms of a 150 ms statement.
            conn.execute(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off"
            )
            with conn.cursor() as curs:
                yield curs

    def _current(self, c: Any, member_ids: Sequence[str]) -> dict[str, tuple[int, Any, Any]]:
        c.execute(self.current_statement, (list(member_ids),))
        return {
            row["member_id"]: (row["version"], row["refresh_at"], row["figures"])
            for row in c.fetchall()
        }

    def _add_totals(self, curs: Any, changes: Sequence[tuple[str, str, int]]) -> None:
        if changes:
            kinds, keys, counts = zip(*changes, strict=True)
            curs.execute(self.add_totals_statement, (list(kinds), list(keys), list(counts)))

    def summary_totals(self, application_name: str, now: datetime) -> SummaryTotals:
        statement = SQL(
            "SELECT (SELECT max(notification_id) FROM {0} WHERE application_name = %s) AS p, "
            "(SELECT jsonb_object_agg(key, value) FROM {1} WHERE kind = %s) AS t, "
            "(SELECT count(*) FROM (SELECT refresh_at FROM {2} WHERE refresh_at <= %s "
            "ORDER BY refresh_at LIMIT " + str(PENDING_COUNTED) + ") AS due) AS b"
        ).format(self.tracking, self.totals_sql, self.table)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (application_name, SUMMARY, now), prepare=True)
            found = curs.fetchone()
        assert found is not None
        return SummaryTotals(found["p"], dict(found["t"] or {}), found["b"])

    def totals(self) -> dict[str, int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT key, value FROM {0} WHERE value <> 0").format(self.totals_sql))
            return {row["key"]: row["value"] for row in curs.fetchall()}

    def due_rows(self, now: datetime, limit: int) -> list[DueRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL(
                    "SELECT member_id, version, program_version, refresh_at FROM {0} "
                    "WHERE refresh_at <= %s ORDER BY refresh_at LIMIT %s"
                ).format(self.table),
                (now, limit),
            )
            rows = curs.fetchall()
        return [
            DueRow(row["member_id"], row["version"], row["program_version"], row["refresh_at"])
            for row in rows
        ]

    def _set_figures(self, c: Any, refreshes: Sequence[Refresh]) -> None:
        if refreshes:
            c.execute(
                SQL(
                    "UPDATE {0} SET figures = x.g, refresh_at = x.w FROM "
                    "jsonb_to_recordset(%s::jsonb) AS x(m text, g jsonb, w timestamptz) "
                    "WHERE {0}.member_id = x.m"
                ).format(self.table),
                (
                    dumps(
                        [{"m": r.member_id, "g": r.figures, "w": r.refresh_at} for r in refreshes]
                    ),
                ),  # fmt: skip
            )


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
