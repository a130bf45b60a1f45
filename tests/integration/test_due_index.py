"""The scheduler's index beside other processes: what its own process wrote it learns from the
write; what another process wrote it loads again from the log."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from domain.clock import FixedClock
from domain.program import ProgramRules
from tests.answers import answers

from .ledgers import START, open_ledger


def test_a_change_by_another_process_after_this_ones_write_is_loaded_again(
    database_url: str,
) -> None:
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as here, open_ledger(database_url, clock) as there:
        assert here.record_due() == 0  # this process runs the scheduler from here on
        answers(here).enrol("ann", "ann@example.com", None, "t")  # noted: nothing due
        here.record_due()
        # Another process (a server's worker) records a purchase: a lot to mature on day 30.
        answers(there).record_purchase("o-1", "ann", Decimal("50.00"), "USD", None, [], None, "t")
        clock.set(START + timedelta(days=31))
        assert here.record_due() >= 1
        matured = [e for e in here.member_events("ann") if e["type"] == "PointsBecameAvailable"]
        assert len(matured) == 1


def test_notes_made_under_other_notice_days_are_not_taken_in(database_url: str) -> None:
    """A write noted under the old notice days, then a program with other days: the index
    finds the member's times under the new days (a notice 60 days before expiry, not 30)."""
    clock = FixedClock(START)
    short = replace(ProgramRules(), lot_lifetime_days=90)  # nothing else falls due before
    with open_ledger(database_url, clock) as ledger:
        ledger.publish_program(short, "t")
        ledger.record_due()  # the ledger's own writes are noted from here on
        answers(ledger).enrol("ann", "ann@example.com", None, "t")
        answers(ledger).record_purchase("o-1", "ann", Decimal("50.00"), "USD", None, [], None, "t")
        clock.set(START + timedelta(days=31))
        assert ledger.record_due() == 1  # available on day 30 (noted: the notice on day 90)
        ledger.publish_program(replace(short, expiry_notice_days=60), "t")
        clock.set(START + timedelta(days=70))  # the lot expires on day 120
        assert ledger.record_due() == 1
        notices = [e for e in ledger.member_events("ann") if e["type"] == "PointsExpiring"]
        assert [n["data"]["lot"] for n in notices] == ["purchase:o-1"]
