"""The PostgreSQL recorder: the table lock and the insert in one statement, the log in order."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.recorders import LockedInsertApplicationRecorder
from adapters.views import open_member_status_view
from api import representations
from domain.clock import FixedClock
from tests.answers import answers

from .ledgers import START, open_ledger

pytestmark = pytest.mark.postgres


def events(originator: uuid.UUID, *versions: int) -> list[StoredEvent]:
    return [StoredEvent(originator, v, "bench:Event", b"state %d" % v) for v in versions]


def test_the_ledger_inserts_through_the_locked_function_not_the_library_pipeline(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def library_insert(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the library's insert ran")

    with open_ledger(postgres_url, FixedClock(START)) as ledger:
        recorder = ledger.recorder
        assert isinstance(recorder, LockedInsertApplicationRecorder)
        monkeypatch.setattr(PostgresApplicationRecorder, "insert_events", library_insert)
        answers(ledger).enrol("m1", "m1@example.com", "Ann", "t")
        first = recorder.max_notification_id() or 0
        ids = recorder.insert_events(events(uuid.uuid4(), 1, 2), tracking=None)
        assert ids == [first + 1, first + 2]
        assert [n.id for n in recorder.select_notifications(first + 1, 10)] == ids


def test_a_version_conflict_is_an_integrity_error_and_records_nothing(postgres_url: str) -> None:
    with open_ledger(postgres_url, FixedClock(START)) as ledger:
        recorder = ledger.recorder
        originator = uuid.uuid4()
        recorder.insert_events(events(originator, 1), tracking=None)
        with pytest.raises(IntegrityError):
            recorder.insert_events(events(originator, 2, 1), tracking=None)
        assert [e.originator_version for e in recorder.select_events(originator)] == [1]
        # The connection is usable afterwards (autocommit: the failed statement rolled back).
        assert len(recorder.insert_events(events(originator, 2), tracking=None) or []) == 1


def test_a_reader_never_sees_an_id_appear_below_a_head_it_has_read(postgres_url: str) -> None:
    """Commit order is id order: what is below a head once read never changes afterwards."""
    with open_ledger(postgres_url, FixedClock(START)) as ledger:
        recorder = ledger.recorder
        before = len(recorder.select_notifications(1, 10_000))
        failures: list[BaseException] = []
        stop = threading.Event()

        def write() -> None:
            try:
                for _ in range(40):
                    recorder.insert_events(events(uuid.uuid4(), 1, 2), tracking=None)
            except BaseException as error:
                failures.append(error)

        reads: list[tuple[int, set[int]]] = []

        def read() -> None:
            while not stop.is_set():
                page = recorder.select_notifications(1, 10_000)
                head = page[-1].id if page else 0
                reads.append((head, {n.id for n in page}))

        reader = threading.Thread(target=read)
        writers = [threading.Thread(target=write) for _ in range(6)]
        reader.start()
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        stop.set()
        reader.join()
        assert not failures
        final = {n.id for n in recorder.select_notifications(1, 10_000)}
    assert len(final) == before + 6 * 40 * 2  # six writers, 40 inserts of two events each
    assert len(reads) > 1
    for head, seen in reads:
        assert {i for i in final if i <= head} == seen


def test_select_events_answers_like_the_library_for_every_combination_of_bounds(
    postgres_url: str,
) -> None:
    """The recorder renders each shape of the query once; the answers must not change."""
    with open_ledger(postgres_url, FixedClock(START)) as ledger:
        recorder = ledger.recorder
        assert isinstance(recorder, LockedInsertApplicationRecorder)
        originator = uuid.uuid4()
        recorder.insert_events(events(originator, *range(1, 11)), tracking=None)
        recorder.insert_events(events(uuid.uuid4(), 1, 2), tracking=None)
        shapes = [
            {"gt": gt, "lte": lte, "desc": desc, "limit": limit}
            for gt in (None, 0, 3)
            for lte in (None, 7)
            for desc in (False, True)
            for limit in (None, 2)
        ]
        for _ in range(2):  # the second pass uses the rendered statements
            for shape in shapes:
                ours = recorder.select_events(originator, **shape)
                theirs = PostgresApplicationRecorder.select_events(recorder, originator, **shape)
                assert ours == theirs, shape
                assert ours, shape
        assert [e.originator_version for e in recorder.select_events(originator, gt=3, lte=7,
                desc=True, limit=2)] == [7, 6]  # fmt: skip


def test_a_view_read_is_one_statement_without_a_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN and ROLLBACK around a one-row read would be two more round trips per read."""
    with open_ledger(postgres_url, FixedClock(START)) as ledger:
        answers(ledger).enrol("m1", "m1@example.com", "Ann", "t")
        view = open_member_status_view(ledger.env)
        try:
            ProjectionWorker(
                ledger, MemberStatusProjection(view, ledger, representations)
            ).catch_up()

            def no_transaction(*args: Any, **kwargs: Any) -> None:
                raise AssertionError("a transaction was opened for a one-row read")

            monkeypatch.setattr(view.datastore, "transaction", no_transaction)  # type: ignore[attr-defined]
            row = view.row("m1")
            assert row is not None and row.member_id == "m1"
            assert view.row("nobody") is None
            assert view.purchase("no-order") is None
        finally:
            monkeypatch.undo()
            view.close()
