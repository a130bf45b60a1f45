"""Status: lifecycle stage, status as of a past instant, program versions never rewrite history."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.analytics import STAGES
from domain.errors import UnknownMember
from domain.ledger import Ledger
from domain.members import Stage
from domain.program import DEFAULT_TIERS, ProgramRules, TierRule
from tests.answers import answers

from .storefront import Shop, day


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def test_stage_follows_the_purchases(member: Shop) -> None:
    assert member.status()["stage"] == "prospect"
    member.buy("o-1", "10.00")
    assert member.status()["stage"] == "new"
    member.at(1).buy("o-2", "10.00")
    assert member.status()["stage"] == "repeat"
    member.at(2).buy("o-3", "2000.00")  # gold
    assert member.status()["stage"] == "loyal"


def test_one_purchase_at_gold_is_new_not_loyal(member: Shop) -> None:
    member.buy("o-1", "2500.00")
    assert member.status()["stage"] == "new"


def test_repeat_at_silver_is_not_loyal(member: Shop) -> None:
    member.buy("o-1", "400.00")
    member.buy("o-2", "400.00")
    assert member.status()["stage"] == "repeat"


def test_dormant_after_180_days_and_lost_after_365_without_a_purchase(member: Shop) -> None:
    member.buy("o-1", "10.00")
    member.at(50).buy("o-2", "10.00")
    member.at(229.99)
    assert member.status()["stage"] == "repeat"
    member.at(230)
    assert member.status()["stage"] == "dormant"
    member.at(414.99)
    assert member.status()["stage"] == "dormant"
    member.at(415)
    assert member.status()["stage"] == "lost"
    member.buy("o-3", "10.00")
    assert member.status()["stage"] == "repeat"


def test_a_prospect_stays_a_prospect_however_long_it_waits(member: Shop) -> None:
    member.at(1000)
    assert member.status()["stage"] == "prospect"


def test_status_as_of_a_past_instant_is_what_the_ledger_had_recorded_then(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", categories=["books"])  # 150 points, available day 30
    member.at(10).buy("o-2", "450.00")  # silver
    member.at(40).redeem("red-1", points=100)
    member.at(50).refund("o-1", "r-1")
    now = member.status()

    then = answers(ledger).member_status("m1", as_of=day(5))
    assert then["as_of"] == day(5).isoformat()
    assert then["stage"] == "new"
    assert then["tier"]["name"] == "bronze"
    assert then["tier"]["qualifying_spend"] == "100.00"
    assert then["points"]["pending"] == 150
    assert then["points"]["pending_lots"] == [{"points": 150, "available_at": day(30).isoformat()}]

    then = answers(ledger).member_status("m1", as_of=day(35))
    assert then["tier"]["name"] == "silver"
    assert (then["points"]["available"], then["points"]["pending"]) == (150, 450)

    then = answers(ledger).member_status("m1", as_of=day(45))
    assert (then["points"]["available"], then["points"]["redeemed"]) == (500, 100)

    assert answers(ledger).member_status("m1", as_of=day(50)) == now


def test_status_as_of_a_time_before_enrolment_is_refused(member: Shop, ledger: Ledger) -> None:
    with pytest.raises(UnknownMember):
        answers(ledger).member_status("m1", as_of=day(0) - timedelta(seconds=1))


def test_status_as_of_uses_the_ledger_recorded_time_not_occurred_at(
    member: Shop, ledger: Ledger
) -> None:
    member.at(20)
    member.buy("o-1", "10.00", occurred_at=day(5))
    assert answers(ledger).member_status("m1", as_of=day(10))["points"]["pending"] == 0
    assert answers(ledger).member_status("m1", as_of=day(20))["points"]["pending"] == 10


def test_a_new_program_version_does_not_alter_recorded_points(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", categories=["books"])  # 150 under version 1
    generous = replace(
        ProgramRules(),
        cross_sell_bonus=200,
        tiers=(TierRule("bronze", Decimal("0"), Decimal("3.0")), *DEFAULT_TIERS[1:]),
    )
    assert ledger.publish_program(generous, "t").version == 2
    member.at(1)
    assert answers(ledger).purchase("o-1")["points_awarded"] == 100
    assert answers(ledger).purchase("o-1")["program_version"] == 1
    assert member.points()["pending"] == 150
    later = member.buy("o-2", "100.00", categories=["toys"])
    assert (later["points_awarded"], later["bonus_points"], later["program_version"]) == (
        300,
        200,
        2,
    )
    assert member.refund("o-1", "r-1")["points_clawed_back"] == 150, "what was awarded"
    assert member.points()["pending"] == 500


def test_a_shorter_return_window_in_a_new_version_leaves_old_lots_alone(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    ledger.publish_program(replace(ProgramRules(), return_window_days=7), "t")
    member.buy("o-2", "10.00")
    member.at(7)
    points = member.points()
    assert (points["available"], points["pending"]) == (10, 100)


def test_the_summary_counts_the_stages_a_status_can_have() -> None:
    """analytics cannot import the member package (it would import itself); its list of
    stages must still be exactly the Stage enum, in order."""
    assert tuple(stage.value for stage in Stage) == STAGES
