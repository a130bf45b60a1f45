"""The follow-up process's tables beside the event store: its tracking position, what it knows
of each member and of the plans in force, and the read models of the effect of each plan
version (``daifuku_followup_*``).

The process writes a page of the log's consequences and the page's position in one
transaction, and only from the position it read (compare-and-set): a second process working
the same log at the same time fails its write and starts again from what the first recorded, so
nothing is counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import Tracking, TrackingRecorder

from adapters.settings import Database
from adapters.sidetables import Connection, connect
from domain.followup_triggers import Profile
from domain.plans import PlanVersion, version_of

SCALE = Decimal(10_000)  # money is kept in ten-thousandths, so sums are exact integers

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS daifuku_followup_tracking (
        name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS daifuku_followup_profiles (
        member_id TEXT PRIMARY KEY,
        purchases INTEGER NOT NULL,
        last_purchase_at TEXT,
        tier TEXT,
        referred INTEGER NOT NULL,
        money TEXT NOT NULL,
        points_redeemed BIGINT NOT NULL,
        followup_events BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS daifuku_followup_plans (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        published_at TEXT NOT NULL,
        plan TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS daifuku_followup_view (
        followup_id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL,
        plan TEXT NOT NULL,
        version INTEGER NOT NULL,
        grp TEXT NOT NULL,
        trigger_at DOUBLE PRECISION NOT NULL,
        goal_event TEXT NOT NULL,
        goal_until DOUBLE PRECISION NOT NULL,
        steps INTEGER NOT NULL,
        reached INTEGER NOT NULL DEFAULT 0,
        converted INTEGER NOT NULL DEFAULT 0,  -- unused: read from the goal events (groups)
        revenue BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'active')""",
    """CREATE INDEX IF NOT EXISTS daifuku_followup_view_member
        ON daifuku_followup_view (member_id, goal_until)""",
    """CREATE INDEX IF NOT EXISTS daifuku_followup_view_plan
        ON daifuku_followup_view (plan, version, grp)""",
    # The goal events (purchases, redemptions) a follow-up's window may hold: a follow-up
    # started late (the process behind the log) still counts those between its trigger and
    # its start, as it would have on time.
    """CREATE TABLE IF NOT EXISTS daifuku_followup_goal_events (
        member_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        kind TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        amount BIGINT NOT NULL,
        PRIMARY KEY (member_id, position))""",
    # A follow-up's conversion and revenue are read from the goal events inside its window
    # when the effect is read: a purchase is one row, however many windows it falls in.
    """CREATE INDEX IF NOT EXISTS daifuku_followup_goal_events_window
        ON daifuku_followup_goal_events (member_id, kind, at)""",
    """CREATE TABLE IF NOT EXISTS daifuku_followup_steps (
        plan TEXT NOT NULL,
        version INTEGER NOT NULL,
        step INTEGER NOT NULL,
        grp TEXT NOT NULL,
        recorded BIGINT NOT NULL DEFAULT 0,
        sent BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (plan, version, step, grp))""",
)

UPSERT_PROFILE = (
    "INSERT INTO daifuku_followup_profiles (member_id, purchases, last_purchase_at, tier, "
    "referred, money, points_redeemed, followup_events) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (member_id) "
    "DO UPDATE SET purchases = excluded.purchases, last_purchase_at = excluded.last_purchase_at,"
    " tier = excluded.tier, referred = excluded.referred, money = excluded.money, "
    "points_redeemed = excluded.points_redeemed, followup_events = excluded.followup_events"
)
UPSERT_PLAN = (
    "INSERT INTO daifuku_followup_plans (name, version, published_at, plan) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
    "published_at = excluded.published_at, plan = excluded.plan"
)
INSERT_FOLLOWUP = (
    "INSERT INTO daifuku_followup_view (followup_id, member_id, plan, version, grp, trigger_at,"
    " goal_event, goal_until, steps) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (followup_id) DO NOTHING"
)
# A follow-up converted if a goal event of its plan's kind falls in its window (after the
# trigger, up to the window's end); its revenue is the purchases in that window.
IN_WINDOW = (
    "FROM daifuku_followup_goal_events g WHERE g.member_id = f.member_id "
    "AND g.at > f.trigger_at AND g.at <= f.goal_until"
)
CONVERTED = f"CASE WHEN EXISTS (SELECT 1 {IN_WINDOW} AND g.kind = f.goal_event) THEN 1 ELSE 0 END"
REVENUE = f"(SELECT COALESCE(sum(g.amount), 0) {IN_WINDOW} AND g.kind = 'purchase')"
INSERT_GOAL_EVENT = (
    "INSERT INTO daifuku_followup_goal_events (member_id, position, kind, at, amount) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (member_id, position) DO NOTHING"
)
STEP_RECORDED = (
    "INSERT INTO daifuku_followup_steps (plan, version, step, grp, recorded) "
    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (plan, version, step, grp) "
    "DO UPDATE SET recorded = daifuku_followup_steps.recorded + 1"
)
REACHED = (
    "UPDATE daifuku_followup_view SET reached = ?, "
    "state = CASE WHEN ? >= steps THEN 'completed' ELSE state END WHERE followup_id = ?"
)
OUTCOME = (
    "UPDATE daifuku_followup_steps SET sent = sent + ?, failed = failed + ? "
    "WHERE step = ? AND (plan, version, grp) IN (SELECT plan, version, grp "
    "FROM daifuku_followup_view WHERE followup_id = ?)"
)
STOPPED = "UPDATE daifuku_followup_view SET state = 'stopped' WHERE followup_id = ?"


def scaled(amount: Decimal) -> int:
    return int(amount * SCALE)


def unscaled(amount: int) -> Decimal:
    return Decimal(amount) / SCALE


@dataclass(frozen=True)
class GroupFigures:
    plan: str
    version: int
    group: str
    members: int
    converted: int
    revenue: Decimal


@dataclass(frozen=True)
class StepFigures:
    plan: str
    version: int
    step: int
    group: str
    recorded: int
    sent: int
    failed: int


class FollowupTables(TrackingRecorder):
    """The follow-up process's tables of one database."""

    def __init__(self, connection: Connection) -> None:
        self.db = connection
        self.db.create_tables(SCHEMA)

    @classmethod
    def open(cls, database: Database) -> FollowupTables:
        return cls(connect(database, "daifuku-followups"))

    def close(self) -> None:
        self.db.close()

    # Tracking (the library's interface).

    def insert_tracking(self, tracking: Tracking) -> None:
        """Move the position on alone (the process writes it with its page: ``write``)."""
        self.db.run(
            "INSERT INTO daifuku_followup_tracking (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (tracking.application_name, tracking.notification_id),
        )

    def max_tracking_id(self, application_name: str) -> int | None:
        rows = self.db.run(
            "SELECT position FROM daifuku_followup_tracking WHERE name = ?", (application_name,)
        )
        return int(rows[0][0]) if rows else None

    # What the process keeps.

    def profiles(self) -> list[Profile]:
        return [
            Profile.from_row(row)
            for row in self.db.run(
                "SELECT member_id, purchases, last_purchase_at, tier, referred, money, "
                "points_redeemed, followup_events FROM daifuku_followup_profiles"
            )
        ]

    def plans(self) -> dict[str, PlanVersion]:
        return {
            name: version_of(name, int(version), datetime.fromisoformat(at), json.loads(plan))
            for name, version, at, plan in self.db.run(
                "SELECT name, version, published_at, plan FROM daifuku_followup_plans"
            )
        }

    def write(
        self,
        name: str,
        previous: int,
        position: int,
        profiles: Sequence[Profile],
        plans: Sequence[PlanVersion],
        statements: Sequence[tuple[str, Sequence[Any]]],
    ) -> bool:
        """A page at once: the profiles and plans it changed, its read-model statements in log
        order, and its last position; False (nothing written) if the position recorded is no
        longer ``previous`` (another process wrote meanwhile)."""
        with self.db.transaction() as t:
            if previous == 0:
                moved = t.run(
                    "INSERT INTO daifuku_followup_tracking (name, position) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING RETURNING position",
                    (name, position),
                )
            else:
                moved = t.run(
                    "UPDATE daifuku_followup_tracking SET position = ? "
                    "WHERE name = ? AND position = ? RETURNING position",
                    (position, name, previous),
                )
            if not moved:
                return False
            t.run_many(UPSERT_PROFILE, [p.to_row() for p in profiles])
            t.run_many(
                UPSERT_PLAN,
                [
                    (v.name, v.version, v.published_at.isoformat(), json.dumps(v.plan.to_dict()))
                    for v in plans
                ],
            )
            t.run_each(statements)
        return True

    # The read models' answers.

    def groups(self, plan: str | None = None) -> list[GroupFigures]:
        where, params = ("WHERE plan = ?", (plan,)) if plan else ("", ())
        where = where.replace("plan", "f.plan")
        rows = self.db.run(
            f"SELECT f.plan, f.version, f.grp, count(*), sum({CONVERTED}), sum({REVENUE}) "
            f"FROM daifuku_followup_view f {where} GROUP BY f.plan, f.version, f.grp "
            "ORDER BY f.plan, f.version, f.grp",
            params,
        )
        return [
            GroupFigures(p, int(v), g, int(n), int(c or 0), unscaled(int(r or 0)))
            for p, v, g, n, c, r in rows
        ]

    def steps(self, plan: str | None = None) -> list[StepFigures]:
        where, params = ("WHERE plan = ?", (plan,)) if plan else ("", ())
        rows = self.db.run(
            "SELECT plan, version, step, grp, recorded, sent, failed FROM daifuku_followup_steps "
            f"{where} ORDER BY plan, version, step, grp",
            params,
        )
        return [
            StepFigures(p, int(v), int(s), g, int(r), int(a), int(f))
            for p, v, s, g, r, a, f in rows
        ]
