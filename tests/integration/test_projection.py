"""The member-status view: exactly once, resumable, equal to the ledger, verified by replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from adapters.followup_process import FollowupProcess, run_until_caught_up
from adapters.followup_tables import FollowupTables
from adapters.projections import MemberStatusProjection, ProjectionWorker, replay
from adapters.settings import Database
from adapters.sidetables import SQLiteConnection
from adapters.verification import MISSING_LIVE, verify_member_status
from adapters.views import MemberStatusRow, MemberStatusView, open_member_status_view
from api import representations
from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import member_uuid
from domain.program import ProgramRules
from tests.answers import answers

from .ledgers import START, open_ledger

SEALED = {"email": None, "name": None, "state": "held"}

MEMBERS = ["ann", "bob", "cat", "dan"]


class Crash(Exception):
    """The worker dies here."""


class CrashingProjection(MemberStatusProjection):
    """Dies on its ``crash_at``-th event, in the middle of a batch."""

    def __init__(self, view: MemberStatusView, ledger: Ledger, crash_at: int) -> None:
        super().__init__(view, ledger, representations)
        self.crash_at = crash_at
        self.calls = 0

    def _fold(self, event: Any, tracking: Tracking, touched: Any) -> None:
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash(tracking.notification_id)
        super()._fold(event, tracking, touched)


def record_history(ledger: Ledger, clock: FixedClock) -> None:
    """Enrolments, a referral, purchases, a new program version, refunds, redemptions, expiry."""
    answers(ledger).enrol("ann", "ann@example.com", "Ann", "t")
    answers(ledger).enrol("bob", "bob@example.com", None, "t")
    code = answers(ledger).member_status("ann")["referral_code"]
    answers(ledger).enrol("cat", "cat@example.com", "Cat", "t", referral_code=code)
    answers(ledger).record_purchase("o-1", "ann", Decimal("120.00"), "USD", None, [], None, "t")
    answers(ledger).record_purchase("o-2", "cat", Decimal("80.00"), "USD", None, [], None, "t")
    clock.advance(timedelta(days=3))
    answers(ledger).record_purchase(
        "o-3", "bob", Decimal("650.00"), "USD", None, [], "satisfaction", "t"
    )
    ledger.publish_program(replace(ProgramRules(), return_window_days=7), "t")
    answers(ledger).enrol("dan", "dan@example.com", None, "t")
    answers(ledger).record_purchase("o-4", "ann", Decimal("40.00"), "USD", None, [], None, "t")
    clock.advance(timedelta(days=40))
    ledger.record_due()
    answers(ledger).redeem("bob", "red-1", None, 100, "t")
    answers(ledger).refund("o-3", "r-1", Decimal("100.00"), "too big", "t")
    clock.advance(timedelta(days=400))
    ledger.record_due()
    answers(ledger).record_purchase("o-5", "cat", Decimal("10.00"), "USD", None, [], None, "t")


@pytest.fixture
def history(database_url: str) -> Iterator[tuple[Ledger, MemberStatusView]]:
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as ledger:
        record_history(ledger, clock)
        view = open_member_status_view(ledger.env)
        try:
            yield ledger, view
        finally:
            view.close()


def rows(view: MemberStatusView) -> list[tuple[Any, ...]]:
    return [(r.member_id, r.status, r.version, r.updated_at.astimezone(UTC)) for r in view.all()]


def scratch_view(tmp_path: Path, name: str) -> MemberStatusView:
    return open_member_status_view(
        Database(kind="sqlite", path=str(tmp_path / f"{name}.db")).event_store_env()
    )


def catch_up(ledger: Ledger, view: MemberStatusView) -> int:
    return ProjectionWorker(
        ledger, MemberStatusProjection(view, ledger, representations)
    ).catch_up()


def test_the_view_is_each_members_status_as_of_its_latest_event(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    head = ledger.recorder.max_notification_id()
    assert catch_up(ledger, view) == head
    assert view.max_tracking_id(ledger.name) == head
    assert [row.member_id for row in view.all()] == sorted(MEMBERS)
    for row in view.all():
        expected = answers(ledger).member_status(row.member_id, as_of=row.updated_at)
        found = representations.opened(row.status, ledger.sealer)
        assert {**found, "as_of": None} == {**expected, "as_of": None}, row.member_id
        assert row.version == len(ledger.member_events(row.member_id, limit=1000))
    # A member whose latest event is now reads the same from the view as from the ledger.
    cat = view.row("cat")
    assert cat is not None
    assert representations.opened(cat.status, ledger.sealer) == answers(ledger).member_status("cat")
    assert view.row("nobody") is None
    assert catch_up(ledger, view) == 0  # nothing new: nothing applied again


def test_a_worker_killed_mid_batch_resumes_and_applies_every_event_exactly_once(
    history: tuple[Ledger, MemberStatusView], tmp_path: Path
) -> None:
    ledger, view = history
    page = 4
    position = 0
    for crash_at in (7, 5, 11):  # three crashes, each in the middle of a batch of 4
        worker = ProjectionWorker(ledger, CrashingProjection(view, ledger, crash_at), page)
        with pytest.raises(Crash):
            worker.catch_up()
        # The batches before the crash are written; the one it broke left nothing behind.
        position += page * ((crash_at - 1) // page)
        assert view.max_tracking_id(ledger.name) == position
    restarted = ProjectionWorker(
        ledger, MemberStatusProjection(view, ledger, representations), page
    )
    assert restarted.catch_up() == (ledger.recorder.max_notification_id() or 0) - position
    for row in view.all():
        assert row.applied == row.version, row.member_id  # each event applied exactly once

    uninterrupted = scratch_view(tmp_path, "uninterrupted")
    try:
        catch_up(ledger, uninterrupted)
        assert rows(view) == rows(uninterrupted)
        assert list(view.all_purchases()) == list(uninterrupted.all_purchases())
    finally:
        uninterrupted.close()


def test_an_event_already_tracked_is_refused_and_changes_nothing(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    before = rows(view)
    tracking = Tracking(ledger.name, 3)
    with pytest.raises(IntegrityError):
        view.write_batch(
            [MemberStatusRow("ann", {"forged": True, "personal": SEALED}, 99, START)], [], tracking
        )
    assert rows(view) == before

    # A row that fails to write takes its tracking position down with it.
    head = view.max_tracking_id(ledger.name) or 0
    with pytest.raises(TypeError):
        unwritable = MemberStatusRow("ann", {"unwritable": object(), "personal": SEALED}, 99, START)
        view.write_batch([unwritable], [], Tracking(ledger.name, head + 1))
    assert view.max_tracking_id(ledger.name) == head
    assert rows(view) == before


def test_replay_from_scratch_gives_identical_rows(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    before = rows(view)
    assert replay(ledger, view, representations) == ledger.recorder.max_notification_id()
    assert rows(view) == before


def corrupt(database_url: str, member_id: str, points: int) -> None:
    database = Database.from_url(database_url)
    if database.kind == "sqlite":
        with closing(sqlite3.connect(database.path)) as conn, conn:
            conn.execute(
                "UPDATE member_status SET status = "
                "json_set(status, '$.points.available', ?) WHERE member_id = ?",
                (points, member_id),
            )
    else:
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE member_status SET status = "
                "jsonb_set(status, '{points,available}', to_jsonb(%s::int)) WHERE member_id = %s",
                (points, member_id),
            )


def test_the_verification_names_a_corrupted_row(
    history: tuple[Ledger, MemberStatusView], database_url: str
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    clean = verify_member_status(ledger, view, representations)
    assert clean.mismatches == []
    assert (clean.events, clean.members) == (ledger.recorder.max_notification_id(), 4)

    truth = view.row("bob")
    assert truth is not None
    corrupt(database_url, "bob", 12345)
    found = verify_member_status(ledger, view, representations)
    assert [(m.member_id, m.field, m.live, m.replayed) for m in found.mismatches] == [
        ("bob", "points.available", 12345, truth.status["points"]["available"])
    ]


def test_a_view_never_built_is_reported_member_by_member(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    result = verify_member_status(ledger, view, representations)
    assert result.position is None and not result.live_view_built
    owners = {"o-1": "ann", "o-2": "cat", "o-3": "bob", "o-4": "ann", "o-5": "cat"}
    assert [(m.member_id, m.field, m.live) for m in result.mismatches] == [
        (member_id, "row", MISSING_LIVE) for member_id in sorted(MEMBERS)
    ] + [(owner, f"purchases.{order}", MISSING_LIVE) for order, owner in owners.items()]


def test_the_verification_replays_only_up_to_the_live_views_position(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    answers(ledger).record_purchase("o-9", "dan", Decimal("70.00"), "USD", None, [], None, "t")
    result = verify_member_status(ledger, view, representations)  # the worker has not seen o-9 yet
    assert result.mismatches == []
    assert result.events == view.max_tracking_id(ledger.name)


class CountingView:
    """Records each write's size and position, then writes through."""

    def __init__(self, view: MemberStatusView) -> None:
        self.view = view
        self.writes: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)

    def write_batch(self, members: Any, purchases: Any, tracking: Tracking) -> None:
        self.writes.append((len(members), tracking.notification_id))
        self.view.write_batch(members, purchases, tracking)


def test_a_rebuild_writes_each_changed_row_once_per_stretch_of_events_not_once_a_page(
    history: tuple[Ledger, MemberStatusView], tmp_path: Path
) -> None:
    """Pages of 3 events, rows written every 12: fewer writes, the same rows, whole writes."""
    ledger, view = history
    head = ledger.recorder.max_notification_id() or 0
    catch_up(ledger, view)
    counted = CountingView(scratch_view(tmp_path, "stretches"))
    projection = MemberStatusProjection(counted, ledger, representations)  # type: ignore[arg-type]
    assert ProjectionWorker(ledger, projection, 3, rows_every=12).catch_up() == head
    # Each write is at a page boundary once 12 events have been folded, the last at the head.
    positions = [position for _, position in counted.writes]
    assert positions == [*range(12, head, 12), head]
    # A member with events in several pages of a stretch was written once in that stretch.
    paged = CountingView(scratch_view(tmp_path, "pages"))
    ProjectionWorker(ledger, MemberStatusProjection(paged, ledger, representations), 3).catch_up()  # type: ignore[arg-type]
    assert [position for _, position in paged.writes] == [*range(3, head, 3), head]
    written = [sum(size for size, _ in view.writes) for view in (counted, paged)]
    assert written[0] < written[1]
    assert rows(counted.view) == rows(paged.view) == rows(view)
    counted.view.close()
    paged.view.close()


def test_every_follow_up_event_moves_its_members_row_on(database_url: str) -> None:
    """A step falling due (or withheld) is a member event like any other: the row applies it,
    so the view stays current for the member and reads keep coming from it."""
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as ledger:
        buyers = [f"c{n}" for n in range(12)]
        for n, member_id in enumerate(buyers):
            answers(ledger).enrol(member_id, f"{member_id}@example.com", None, "t")
            amount = Decimal(10 + 40 * n)
            answers(ledger).record_purchase(
                f"o-{n}", member_id, amount, "USD", None, [], None, "t"
            )  # fmt: skip
        process = FollowupProcess(ledger, FollowupTables(SQLiteConnection(":memory:")))
        run_until_caught_up(process)
        for days in (0, 3, 7):
            clock.set(START + timedelta(days=days, hours=1))
            ledger.record_due()
        topics = {
            event["type"] for member_id in buyers for event in ledger.member_events(member_id)
        }
        assert {"FollowupStepDue", "FollowupStepWithheld"} <= topics, topics
        view = open_member_status_view(ledger.env)
        try:
            catch_up(ledger, view)
            recorder: Any = ledger.recorder
            for member_id in buyers:
                row = view.current_row(
                    member_id, member_uuid(member_id), recorder.events_table_name
                )
                assert row is not None, member_id
                assert row.version == len(ledger.member_events(member_id, limit=1000))
        finally:
            view.close()
