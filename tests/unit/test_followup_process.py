"""The follow-up process: who enters which plan, decided from the log alone."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.followup_process import FollowupProcess, run_until_caught_up
from adapters.followup_tables import FollowupTables
from adapters.sidetables import SQLiteConnection
from domain.ledger import Ledger
from domain.members.followups import followup_id

from .storefront import Shop, day


@pytest.fixture
def tables() -> FollowupTables:
    return FollowupTables(SQLiteConnection(":memory:"))


@pytest.fixture
def process(ledger: Ledger, tables: FollowupTables) -> FollowupProcess:
    return FollowupProcess(ledger, tables)


def followups(shop: Shop, member_id: str = "m1") -> list[Any]:
    return list(shop.ledger.member_copy(member_id).followups.by_id.values())


def test_a_first_purchase_starts_thank_you_with_steps_on_days_0_3_7(
    shop: Shop, process: FollowupProcess
) -> None:
    shop.enrol("m1")
    shop.at(0.001).buy("o-1", "100.00")
    run_until_caught_up(process)
    plans = sorted(f.plan for f in followups(shop))
    assert plans == ["a-class", "prospect", "thank-you"]  # the only buyer is class A
    thanks = next(f for f in followups(shop) if f.plan == "thank-you")
    assert [s.due_at for s in thanks.steps] == [day(0.001), day(3.001), day(7.001)]
    assert thanks.steps[0].state in ("due", "withheld")
    assert thanks.id == followup_id("thank-you", 2, "m1")
    shop.at(3.001)
    shop.ledger.record_due()
    thanks = next(f for f in followups(shop) if f.plan == "thank-you")
    assert [s.state != "waiting" for s in thanks.steps] == [True, True, False]
