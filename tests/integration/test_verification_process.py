"""A verification's replay runs in a child process, out of the server's way, and answers what
the same replay in this process answers; stopped, the child goes and nothing is reported."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from eventsourcing.persistence import Tracking

from adapters.verification import VerificationStopped, verify_member_status
from adapters.verification_process import separable, verify_in_child
from adapters.views import MemberStatusView
from api import representations
from domain.ledger import Ledger

from .test_projection import catch_up, history

__all__ = ["history"]  # the fixture


def test_the_replay_runs_in_a_child_and_answers_as_here(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    row = view.row("ann")
    assert row is not None
    view.write_batch(  # a tampered row: the answer names it
        [type(row)(**{**vars(row), "version": 99, "applied": 0})], [], _position(ledger, view)
    )
    seen: list[list[str]] = []

    def progress(done: int, total: int, seconds: float) -> None:
        seen.append([child.name for child in multiprocessing.active_children()])

    found = verify_in_child(ledger, view, representations, progress)
    assert seen and all("daifuku-verification" in names for names in seen)
    here = verify_member_status(ledger, view, representations)
    assert found.to_dict() == here.to_dict()
    assert any(m.member_id == "ann" and m.field == "version" for m in found.mismatches)
    assert not [c for c in multiprocessing.active_children() if c.name == "daifuku-verification"]


def test_a_stopped_replay_reports_nothing_and_leaves_no_child(
    history: tuple[Ledger, MemberStatusView],
) -> None:
    ledger, view = history
    catch_up(ledger, view)
    stop = threading.Event()

    def progress(done: int, total: int, seconds: float) -> None:
        stop.set()

    with pytest.raises(VerificationStopped):
        verify_in_child(ledger, view, representations, progress, stop)
    assert not [c for c in multiprocessing.active_children() if c.name == "daifuku-verification"]


def test_an_in_memory_store_is_verified_here() -> None:
    assert not separable(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"}
    )
    assert separable({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": "/tmp/x.db"})
    assert separable({"PERSISTENCE_MODULE": "eventsourcing.postgres"})


def _position(ledger: Ledger, view: MemberStatusView) -> Tracking:
    head = ledger.recorder.max_notification_id() or 0
    return Tracking(ledger.name, head + 1000)
