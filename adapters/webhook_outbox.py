"""The webhook outbox: one delivery per (ledger event, endpoint), its attempts, and the
dispatcher's tracking position, in tables beside the event store.

The dispatcher writes a batch's deliveries, the endpoints' state and its position in one
transaction, so a dispatcher killed at any instant resumes from a position whose deliveries
all exist and none twice (the primary key would refuse a second one anyway). The deliverer
takes the due deliveries, never a member's later event before its earlier one at one
endpoint, and writes what each attempt got.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking, TrackingRecorder

from adapters.settings import Database
from adapters.sidetables import Connection, connect

PENDING, PAUSED, DELIVERED, FAILED, CANCELLED = (
    "pending",
    "paused",  # the endpoint is disabled: sent again once it is enabled
    "delivered",
    "failed",  # every retry failed
    "cancelled",  # the endpoint was removed
)
STATES = (PENDING, PAUSED, DELIVERED, FAILED, CANCELLED)
EXCERPT_LIMIT = 1024
LEASE = "dispatcher"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_lease (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_tracking (
        name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_endpoints (
        endpoint_id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        types TEXT,
        include_imports INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0,
        failing_since DOUBLE PRECISION,
        last_success_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_deliveries (
        endpoint_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        member_id TEXT NOT NULL,
        type TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL,
        queued_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        tries INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        delivered_at DOUBLE PRECISION,
        last_status INTEGER,
        last_error TEXT,
        PRIMARY KEY (endpoint_id, position))""",
    """CREATE INDEX IF NOT EXISTS daifuku_webhook_member_queue
        ON daifuku_webhook_deliveries (endpoint_id, member_id, position)
        WHERE state = 'pending'""",
    """CREATE INDEX IF NOT EXISTS daifuku_webhook_due
        ON daifuku_webhook_deliveries (next_attempt_at) WHERE state = 'pending'""",
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_attempts (
        endpoint_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        status INTEGER,
        latency_ms DOUBLE PRECISION NOT NULL,
        excerpt TEXT NOT NULL,
        error TEXT,
        PRIMARY KEY (endpoint_id, position, attempt))""",
    """CREATE TABLE IF NOT EXISTS daifuku_webhook_replays (
        replay_id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        next_after BIGINT NOT NULL,
        until BIGINT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION)""",
)

INSERT_DELIVERY = (
    "INSERT INTO daifuku_webhook_deliveries (endpoint_id, position, member_id, type, "
    "message_id, body, recorded_at, queued_at, state, next_attempt_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, position) DO NOTHING"
)
# A replay queues again what was delivered or given up; a delivery still waiting stays as is.
REQUEUE_DELIVERY = (
    "INSERT INTO daifuku_webhook_deliveries (endpoint_id, position, member_id, type, "
    "message_id, body, recorded_at, queued_at, state, next_attempt_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, position) DO UPDATE "
    "SET state = 'pending', tries = 0, next_attempt_at = excluded.next_attempt_at "
    "WHERE daifuku_webhook_deliveries.state IN ('delivered', 'failed')"
)
UPSERT_TRACKING = (
    "INSERT INTO daifuku_webhook_tracking (name, position) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)
UPSERT_ENDPOINT = (
    "INSERT INTO daifuku_webhook_endpoints (endpoint_id, created_at, types, include_imports, "
    "active, removed) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id) DO UPDATE SET "
    "types = excluded.types, include_imports = excluded.include_imports, "
    "active = excluded.active, removed = excluded.removed"
)
# A member's delivery is due only when none of its earlier ones at that endpoint still waits.
SELECT_DUE = (
    "SELECT d.endpoint_id, d.position, d.member_id, d.message_id, d.body, d.tries, d.attempts, "
    "d.recorded_at FROM daifuku_webhook_deliveries d "
    "WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND NOT EXISTS ("
    "SELECT 1 FROM daifuku_webhook_deliveries e WHERE e.state = 'pending' "
    "AND e.endpoint_id = d.endpoint_id AND e.member_id = d.member_id "
    "AND e.position < d.position) ORDER BY d.next_attempt_at, d.position LIMIT ?"
)
RECORD_ATTEMPT = (
    "INSERT INTO daifuku_webhook_attempts (endpoint_id, position, attempt, at, status, "
    "latency_ms, excerpt, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (endpoint_id, position, attempt) DO NOTHING"
)
# ``state``: delivered, failed (no retry left) or pending (retry at next_attempt_at). A
# delivery paused or cancelled meanwhile keeps that state unless this attempt delivered it.
UPDATE_DELIVERY = (
    "UPDATE daifuku_webhook_deliveries SET attempts = attempts + 1, tries = tries + 1, "
    "last_status = ?, last_error = ?, next_attempt_at = ?, "
    "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, "
    "state = CASE WHEN ? = 'delivered' THEN 'delivered' "
    "WHEN state = 'pending' THEN ? ELSE state END "
    "WHERE endpoint_id = ? AND position = ?"
)


@dataclass(frozen=True)
class Queued:
    """A delivery to make: the message of one ledger event for one endpoint."""

    endpoint_id: str
    position: int
    member_id: str
    type: str
    message_id: str
    body: str
    recorded_at: float
    state: str = PENDING  # or paused: its endpoint is disabled

    def row(self, now: float) -> tuple[Any, ...]:
        """The values of ``INSERT_DELIVERY`` and ``REQUEUE_DELIVERY``, queued and due ``now``."""
        return (
            self.endpoint_id,
            self.position,
            self.member_id,
            self.type,
            self.message_id,
            self.body,
            self.recorded_at,
            now,
            self.state,
            now,
        )


@dataclass(frozen=True)
class Due:
    endpoint_id: str
    position: int
    member_id: str
    message_id: str
    body: str
    tries: int  # attempts since it was queued (or queued again by a replay)
    attempts: int  # attempts ever
    recorded_at: float


@dataclass(frozen=True)
class Outcome:
    """What one attempt got, and what becomes of the delivery."""

    endpoint_id: str
    position: int
    attempt: int
    at: float
    status: int | None
    latency_ms: float
    excerpt: str
    error: str | None
    state: str  # delivered, pending (retried at next_attempt_at) or failed
    next_attempt_at: float | None
    recorded_at: float  # when the event was recorded (for the delivery lag)


@dataclass(frozen=True)
class Endpoint:
    """What the dispatcher knows of a subscription as of its position."""

    endpoint_id: str
    types: list[str]
    include_imports: bool
    active: bool  # enabled and not removed
    # A disabled endpoint's events are queued paused (sent once it is enabled); a removed
    # endpoint's are not queued.
    removed: bool = False


@dataclass(frozen=True)
class Replay:
    replay_id: str
    endpoint_id: str
    next_after: int
    until: int


class Outbox(TrackingRecorder):
    """The outbox tables of one database (``daifuku_webhook_*``)."""

    def __init__(self, connection: Connection) -> None:
        self.db = connection
        self.db.create_tables(SCHEMA)

    @classmethod
    def open(cls, database: Database) -> Outbox:
        return cls(connect(database, "daifuku-webhooks"))

    def close(self) -> None:
        self.db.close()

    # Tracking (the library's interface: a projection's view records where it is).

    def insert_tracking(self, tracking: Tracking) -> None:
        self.db.run(UPSERT_TRACKING, (tracking.application_name, tracking.notification_id))

    def max_tracking_id(self, application_name: str) -> int | None:
        rows = self.db.run(
            "SELECT position FROM daifuku_webhook_tracking WHERE name = ?", (application_name,)
        )
        return int(rows[0][0]) if rows else None

    # One dispatcher at a time (two would each keep a member's order, but not together).

    def take_lease(self, holder: str, seconds: float, now: float) -> bool:
        """Hold (or renew) the dispatcher's lease for ``seconds``; False while another
        holder's lease has not expired."""
        rows = self.db.run(
            "INSERT INTO daifuku_webhook_lease (name, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at WHERE daifuku_webhook_lease.holder = "
            "excluded.holder OR daifuku_webhook_lease.expires_at < ? RETURNING holder",
            (LEASE, holder, now + seconds, now),
        )
        return bool(rows)

    def release_lease(self, holder: str) -> None:
        self.db.run(
            "DELETE FROM daifuku_webhook_lease WHERE name = ? AND holder = ?", (LEASE, holder)
        )

    # The dispatcher's writes.

    def write(
        self,
        tracking: Tracking,
        queued: Sequence[Queued],
        endpoints: Iterable[tuple[Endpoint, float]],
        replays: Sequence[tuple[Replay, float]],
        states: Sequence[tuple[str, str, str, float]],
        now: float,
    ) -> None:
        """A batch of the log at once: its deliveries, the endpoints it changed (with their
        creation time), the replays it asked for, the state changes of endpoints' waiting
        deliveries (endpoint, from, to, at), and the position of its last event."""
        with self.db.transaction() as t:
            t.run_many(
                UPSERT_ENDPOINT,
                [
                    (
                        e.endpoint_id,
                        created,
                        json.dumps(e.types),
                        int(e.include_imports),
                        int(e.active),
                        int(e.removed),
                    )
                    for e, created in endpoints
                ],
            )
            for endpoint_id, before, after, at in states:
                t.run(
                    "UPDATE daifuku_webhook_deliveries SET state = ?, tries = 0, "
                    "next_attempt_at = ? WHERE endpoint_id = ? AND state = ?",
                    (after, at, endpoint_id, before),
                )
            t.run_many(INSERT_DELIVERY, [q.row(now) for q in queued])
            t.run_many(
                "INSERT INTO daifuku_webhook_replays (replay_id, endpoint_id, next_after, until, "
                "requested_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (replay_id) DO NOTHING",
                [(r.replay_id, r.endpoint_id, r.next_after, r.until, at) for r, at in replays],
            )
            t.run(UPSERT_TRACKING, (tracking.application_name, tracking.notification_id))

    def endpoints(self) -> list[Endpoint]:
        rows = self.db.run(
            "SELECT endpoint_id, types, include_imports, active, removed "
            "FROM daifuku_webhook_endpoints WHERE types IS NOT NULL"
        )
        return [Endpoint(r[0], json.loads(r[1]), bool(r[2]), bool(r[3]), bool(r[4])) for r in rows]

    def register(self, endpoint_id: str, created_at: float) -> None:
        """Note a new subscription for listing at once (the dispatcher fills in the rest)."""
        self.db.run(
            "INSERT INTO daifuku_webhook_endpoints (endpoint_id, created_at) VALUES (?, ?) "
            "ON CONFLICT (endpoint_id) DO NOTHING",
            (endpoint_id, created_at),
        )

    def endpoint_ids(self, after: tuple[float, str] | None, limit: int) -> list[tuple[float, str]]:
        """Subscriptions in the order they were made, ``limit`` after the cursor ``after``."""
        if after is None:
            rows = self.db.run(
                "SELECT created_at, endpoint_id FROM daifuku_webhook_endpoints "
                "ORDER BY created_at, endpoint_id LIMIT ?",
                (limit,),
            )
        else:
            rows = self.db.run(
                "SELECT created_at, endpoint_id FROM daifuku_webhook_endpoints "
                "WHERE (created_at, endpoint_id) > (?, ?) "
                "ORDER BY created_at, endpoint_id LIMIT ?",
                (*after, limit),
            )
        return [(float(r[0]), str(r[1])) for r in rows]

    # Replays.

    def replays(self) -> list[Replay]:
        rows = self.db.run(
            "SELECT replay_id, endpoint_id, next_after, until FROM daifuku_webhook_replays "
            "WHERE done_at IS NULL ORDER BY requested_at, replay_id"
        )
        return [Replay(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def requeue(self, replay: Replay, queued: Sequence[Queued], to: int, now: float) -> None:
        """A step of ``replay``: queue ``queued`` again and move its position on to ``to``."""
        with self.db.transaction() as t:
            t.run_many(REQUEUE_DELIVERY, [q.row(now) for q in queued])
            t.run(
                "UPDATE daifuku_webhook_replays SET next_after = ?, done_at = ? "
                "WHERE replay_id = ?",
                (to, now if to >= replay.until else None, replay.replay_id),
            )

    # The deliverer's reads and writes.

    def due(self, now: float, limit: int) -> list[Due]:
        return [
            Due(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), int(r[6]), r[7])
            for r in self.db.run(SELECT_DUE, (now, limit))
        ]

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Attempts and what became of their deliveries, and each endpoint's failing streak."""
        if not outcomes:
            return
        with self.db.transaction() as t:
            t.run_many(
                RECORD_ATTEMPT,
                [
                    (
                        o.endpoint_id,
                        o.position,
                        o.attempt,
                        o.at,
                        o.status,
                        o.latency_ms,
                        o.excerpt[:EXCERPT_LIMIT],
                        o.error,
                    )
                    for o in outcomes
                ],
            )
            t.run_many(
                UPDATE_DELIVERY,
                [
                    (
                        o.status,
                        o.error,
                        o.next_attempt_at,
                        o.state,
                        o.at,
                        o.state,
                        o.state,
                        o.endpoint_id,
                        o.position,
                    )
                    for o in outcomes
                ],
            )
            last: dict[str, Outcome] = {}
            for o in outcomes:
                last[o.endpoint_id] = o
            for endpoint_id, o in last.items():
                if o.state == DELIVERED:
                    t.run(
                        "UPDATE daifuku_webhook_endpoints SET failing_since = NULL, "
                        "last_success_at = ? WHERE endpoint_id = ?",
                        (o.at, endpoint_id),
                    )
                else:
                    t.run(
                        "UPDATE daifuku_webhook_endpoints SET failing_since = "
                        "coalesce(failing_since, ?) WHERE endpoint_id = ?",
                        (o.at, endpoint_id),
                    )

    def failing_since(self, endpoint_id: str) -> float | None:
        rows = self.db.run(
            "SELECT failing_since FROM daifuku_webhook_endpoints WHERE endpoint_id = ?",
            (endpoint_id,),
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # Retention.

    def prune(self, endpoint_id: str, before: int, limit: int) -> int:
        """Forget up to ``limit`` of an endpoint's finished deliveries (delivered, failed or
        cancelled) of events before position ``before``, with their attempts; how many."""
        with self.db.transaction() as t:
            keys = t.run(
                "SELECT position FROM daifuku_webhook_deliveries WHERE endpoint_id = ? "
                "AND position < ? AND state IN ('delivered', 'failed', 'cancelled') "
                "ORDER BY position LIMIT ?",
                (endpoint_id, before, limit),
            )
            rows = [(endpoint_id, position) for (position,) in keys]
            t.run_many(
                "DELETE FROM daifuku_webhook_attempts WHERE endpoint_id = ? AND position = ?",
                rows,
            )
            t.run_many(
                "DELETE FROM daifuku_webhook_deliveries WHERE endpoint_id = ? AND position = ?",
                rows,
            )
        return len(rows)

    # Reads for the API and the figures.

    def deliveries(
        self, endpoint_id: str, after: int | None, limit: int, state: str | None = None
    ) -> list[dict[str, Any]]:
        """An endpoint's deliveries, newest first, ``limit`` before position ``after``."""
        clauses = ["endpoint_id = ?"]
        params: list[Any] = [endpoint_id]
        if after is not None:
            clauses.append("position < ?")
            params.append(after)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        rows = self.db.run(
            "SELECT position, member_id, type, message_id, state, attempts, next_attempt_at, "
            "delivered_at, last_status, last_error, queued_at, recorded_at "
            f"FROM daifuku_webhook_deliveries WHERE {' AND '.join(clauses)} "
            "ORDER BY position DESC LIMIT ?",
            (*params, limit),
        )
        names = (
            "position",
            "member_id",
            "type",
            "message_id",
            "state",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_status",
            "last_error",
            "queued_at",
            "recorded_at",
        )
        found = [dict(zip(names, row, strict=True)) for row in rows]
        if found:
            attempts = self.db.run(
                "SELECT position, attempt, at, status, latency_ms, excerpt, error "
                "FROM daifuku_webhook_attempts WHERE endpoint_id = ? AND position <= ? "
                "AND position >= ? ORDER BY position, attempt",
                (endpoint_id, found[0]["position"], found[-1]["position"]),
            )
            by_position: dict[int, list[dict[str, Any]]] = {}
            for a in attempts:
                by_position.setdefault(int(a[0]), []).append(
                    {
                        "attempt": a[1],
                        "at": a[2],
                        "status": a[3],
                        "latency_ms": a[4],
                        "excerpt": a[5],
                        "error": a[6],
                    }
                )
            for item in found:
                item["attempt_list"] = by_position.get(int(item["position"]), [])
        return found

    def waiting(self) -> tuple[int, int, float | None]:
        """For /metrics: deliveries waiting, how many of them after a failed attempt, and when
        the oldest waiting one was recorded (read on the pending index only)."""
        rows = self.db.run(
            "SELECT count(*), coalesce(sum(CASE WHEN tries > 0 THEN 1 ELSE 0 END), 0), "
            "min(recorded_at) FROM daifuku_webhook_deliveries WHERE state = 'pending'"
        )
        count, retrying, oldest = rows[0]
        return int(count), int(retrying), None if oldest is None else float(oldest)
