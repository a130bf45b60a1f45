"""Notices: a lot about to expire and a guarantee window about to close are recorded once, at
their time, while there is still something to tell, so a webhook can deliver them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adapters.vault import Vault
from domain.clock import FixedClock
from domain.errors import InvalidInput
from domain.ledger import Ledger
from domain.members import Member, member_uuid
from domain.program import ProgramRules
from tests.answers import answers

from .storefront import IN_MEMORY, Shop, day


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def publish(ledger: Ledger, **rules: Any) -> None:
    ledger.publish_program(replace(ProgramRules(), **rules), "test")


def notices(member: Shop, kind: str = "PointsExpiring") -> list[dict[str, Any]]:
    return [e["data"] for e in member.events(kind=kind)]


def claim(ledger: Ledger, order_id: str, claim_id: str) -> None:
    _, created = answers(ledger).claim_guarantee(order_id, claim_id, None, "test")
    assert created


# Lots about to expire.


def test_a_lot_is_noticed_30_days_before_it_expires_once(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")  # available day 30, expires day 760
    member.at(730 - 0.001)
    # The lot became available, the member went quiet (day 180); nothing to tell yet.
    assert ledger.record_due() == 2
    assert notices(member) == []
    member.at(730)
    assert ledger.record_due() == 1
    assert notices(member) == [
        {
            "member_id": "m1",
            "at": day(730).isoformat(),
            "cause": f"scheduler:{day(730).isoformat()}",
            "program_version": 1,
            "lot": "purchase:o-1",
            "points": 100,
            "expires_at": day(760).isoformat(),
        }
    ]
    assert ledger.record_due() == 0, "a second run at the same time records nothing"
    member.at(759)
    assert ledger.record_due() == 0, "the lot was told of once"
    member.at(760)
    assert ledger.record_due() == 1
    assert [e["type"] for e in member.events()][-2:] == ["PointsExpiring", "PointsExpired"]


def test_the_notice_tells_the_points_the_lot_still_holds(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    member.at(40).redeem("red-1", points=40)
    member.at(730)
    ledger.record_due()
    assert [n["points"] for n in notices(member)] == [60]


def test_a_change_after_the_notice_time_records_the_notice_first(member: Shop) -> None:
    member.buy("o-1", "100.00")
    member.at(735).redeem("red-1", points=10)
    types = [e["type"] for e in member.events()][-4:]
    assert types == ["PointsBecameAvailable", "BecameDormant", "PointsExpiring", "PointsRedeemed"]
    assert notices(member)[0]["at"] == day(730).isoformat()
    assert notices(member)[0]["points"] == 100


def test_a_lot_spent_before_its_notice_time_is_not_noticed(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    member.at(40).redeem("red-1", points=100)
    member.at(800)
    ledger.record_due()
    assert notices(member) == []
    assert member.events(kind="PointsExpired") == []


def test_a_lot_clawed_back_before_its_notice_time_is_not_noticed(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    member.buy("o-2", "50.00")
    member.at(5).refund("o-1", "rf-1")
    member.at(800)
    ledger.record_due()
    assert [n["lot"] for n in notices(member)] == ["purchase:o-2"]


def test_a_lot_that_expired_before_its_notice_was_asked_for_is_never_noticed(
    member: Shop, ledger: Ledger
) -> None:
    publish(ledger, expiry_notice_days=0)
    member.buy("o-1", "100.00")
    member.at(800)
    ledger.record_due()
    publish(ledger, expiry_notice_days=30)
    member.at(801)
    assert ledger.record_due() == 0
    assert notices(member) == []
    assert len(member.events(kind="PointsExpired")) == 1


def test_a_lot_that_matures_with_less_than_the_notice_days_left_is_noticed_at_once(
    member: Shop, ledger: Ledger
) -> None:
    publish(ledger, lot_lifetime_days=10)
    member.buy("o-1", "100.00")  # available day 30, expires day 40
    member.at(30)
    assert ledger.record_due() == 2
    recorded = [(e["type"], e["data"]["at"]) for e in member.events()[-2:]]
    assert recorded == [
        ("PointsBecameAvailable", day(30).isoformat()),
        ("PointsExpiring", day(30).isoformat()),
    ]


def test_points_given_back_by_a_cancellation_are_not_noticed_again(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00")
    member.at(731).redeem("red-1", points=100)  # after the notice of the lot
    member.at(732)
    answers(ledger).cancel_redemption("red-1", "test")
    member.at(759)
    ledger.record_due()
    assert len(notices(member)) == 1
    assert member.points()["available"] == 100


def test_the_notice_days_are_a_program_rule(member: Shop, ledger: Ledger) -> None:
    publish(ledger, expiry_notice_days=7)
    member.buy("o-1", "100.00")
    member.at(752)
    ledger.record_due()
    assert notices(member) == []
    member.at(753)
    assert ledger.record_due() == 1
    assert notices(member)[0]["at"] == day(753).isoformat()


def test_zero_notice_days_means_no_notice(member: Shop, ledger: Ledger) -> None:
    publish(ledger, expiry_notice_days=0, guarantee_notice_days=0)
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.at(800)
    ledger.record_due()
    assert notices(member) == []
    assert notices(member, "GuaranteeExpiring") == []
    assert len(member.events(kind="PointsExpired")) == 1


def test_the_scheduler_follows_a_change_of_the_notice_days(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00")
    member.at(700)
    assert ledger.record_due() == 2  # the maturing, dormancy; the notice is due on day 730
    assert ledger.record_due() == 0  # the index has seen every event since
    publish(ledger, expiry_notice_days=60)  # now due on day 700
    assert ledger.record_due() == 1
    assert notices(member)[0]["at"] == day(700).isoformat()


# Guarantee windows about to close.


def test_a_guarantee_is_noticed_7_days_before_its_window_closes_once(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")  # the window closes on day 30
    member.at(23 - 0.001)
    assert ledger.record_due() == 0
    member.at(23)
    assert ledger.record_due() == 1
    assert notices(member, "GuaranteeExpiring") == [
        {
            "member_id": "m1",
            "at": day(23).isoformat(),
            "cause": f"scheduler:{day(23).isoformat()}",
            "program_version": 1,
            "order_id": "o-1",
            "policy": "satisfaction",
            "closes_at": day(30).isoformat(),
        }
    ]
    member.at(29)
    assert ledger.record_due() == 0, "the guarantee was told of once"


def test_a_claimed_guarantee_is_not_noticed(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.at(10)
    claim(ledger, "o-1", "c-1")
    member.at(40)
    ledger.record_due()
    assert notices(member, "GuaranteeExpiring") == []


def test_a_purchase_refunded_in_full_is_not_noticed_a_partly_refunded_one_is(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.buy("o-2", "100.00", guarantee="satisfaction")
    member.at(5).refund("o-1", "rf-1")
    member.refund("o-2", "rf-2", "40.00")
    member.at(40)
    ledger.record_due()
    assert [n["order_id"] for n in notices(member, "GuaranteeExpiring")] == ["o-2"]


def test_a_window_shorter_than_the_notice_days_is_noticed_at_the_purchase(
    member: Shop, ledger: Ledger
) -> None:
    publish(ledger, guarantee_notice_days=45)
    member.at(2).buy("o-1", "100.00", guarantee="satisfaction")
    assert ledger.record_due() == 1
    assert notices(member, "GuaranteeExpiring")[0]["at"] == day(2).isoformat()


# Notices change nothing else.


def test_notices_change_no_status_and_no_refresh_instant(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.at(700)
    ledger.record_due()
    terms = ledger.terms()
    held = ledger.member_copy("m1")
    assert held.next_due_at(terms) == day(730), "the scheduler's next visit: the notice"
    assert held.status_changes_at(day(700), terms) == day(760), "the status's: the expiry"
    before = member.status()
    member.at(730)
    assert ledger.record_due() == 1
    assert member.status() == {**before, "as_of": day(730).isoformat()}


def test_a_replayed_member_remembers_what_it_was_told(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.at(730)
    # Told of the guarantee, available, dormant, told of the lot.
    assert ledger.record_due() == 4
    replayed = ledger.member_at("m1", day(730))
    assert replayed.lots["purchase:o-1"].expiry_noticed
    assert replayed.purchases["o-1"].guarantee_noticed
    assert replayed.next_due_at(ledger.terms()) == day(760)


# The rules.


def test_the_notice_days_default_to_30_and_7_and_read_so_from_an_older_document() -> None:
    rules = ProgramRules()
    assert rules.to_dict()["notices"] == {"expiry_notice_days": 30, "guarantee_notice_days": 7}
    older = rules.to_dict()
    del older["notices"]
    assert ProgramRules.from_dict(older) == rules
    changed = {**older, "notices": {"expiry_notice_days": 0, "guarantee_notice_days": 365}}
    read = ProgramRules.from_dict(changed)
    assert (read.expiry_notice_days, read.guarantee_notice_days) == (0, 365)


@pytest.mark.parametrize("days", [-1, 366, "7", 1.5])
def test_notice_days_outside_0_to_365_are_refused(days: object) -> None:
    document = {"notices": {"expiry_notice_days": days, "guarantee_notice_days": days}}
    with pytest.raises(InvalidInput) as refused:
        ProgramRules.from_dict(document)
    assert set(refused.value.errors) == {
        "notices.expiry_notice_days",
        "notices.guarantee_notice_days",
    }


def test_an_unknown_notice_rule_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        ProgramRules.from_dict({"notices": {"expiry_days": 3}})
    assert set(refused.value.errors) == {"notices.expiry_days"}


def test_a_member_read_from_its_snapshot_has_the_notice_queues_of_its_events(
    clock: FixedClock,
) -> None:
    ledger = Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory(), snapshot_interval=2)
    shop = Shop(ledger, clock)
    shop.enrol("m1")
    shop.buy("o-1", "100.00", guarantee="satisfaction")
    shop.buy("o-2", "50.00", guarantee="trial-90")
    shop.at(23)
    assert ledger.record_due() == 1  # o-1's window
    uid = member_uuid("m1")
    assert ledger.snapshots is not None and list(ledger.snapshots.get(uid))
    folded: Any = None
    for event in ledger.events.get(uid):
        folded = event.mutate(folded)
    read: Member = ledger.repository.get(uid, deepcopy_from_cache=False)
    assert vars(read) == vars(folded)
    assert read.open_guarantees.queue == [[day(90), 1, "o-2"]]
    assert read.next_due_at(ledger.terms()) == day(30)  # o-1's lot becomes available
