"""Refund guarantees: payouts half-even, the window, clawback, events, replay and liability."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from api import representations
from domain.errors import (
    Conflict,
    EvidenceRequired,
    GuaranteeAlreadyClaimed,
    GuaranteeWindowClosed,
    NoGuarantee,
    OverRefund,
    UnknownOrder,
)
from domain.ledger import Ledger
from domain.members import Member, member_uuid
from domain.program import GuaranteePolicy, ProgramRules
from tests.answers import answers

from .storefront import START, Shop, day

WINDOWS = {"satisfaction": 30, "trial-90": 90, "plus-10": 60, "double": 30, "outcome-365": 365}


@pytest.fixture
def member(shop: Shop) -> Shop:
    shop.enrol("m1")
    return shop


def claim(
    ledger: Ledger,
    order_id: str,
    claim_id: str = "c-1",
    evidence: str | None = "not satisfied",
    cause: str = "test",
) -> dict[str, Any]:
    result, created = answers(ledger).claim_guarantee(order_id, claim_id, evidence, cause)
    assert created
    return result


def check_balance(points: dict[str, Any]) -> None:
    """API.md: available + pending = lifetime_earned - clawed_back - redeemed - expired."""
    assert points["available"] + points["pending"] == (
        points["lifetime_earned"] - points["clawed_back"] - points["redeemed"] - points["expired"]
    ), points


# Payouts.


@pytest.mark.parametrize(
    ("policy", "amount", "payout"),
    [
        ("satisfaction", "0.01", "0.01"),
        ("trial-90", "123.45", "123.45"),
        ("plus-10", "10.00", "11.00"),
        ("plus-10", "10.05", "11.06"),  # 11.055: the half cent goes to the even 6
        ("plus-10", "10.15", "11.16"),  # 11.165: the half cent goes to the even 6
        ("plus-10", "10.25", "11.28"),  # 11.275: to the even 8
        ("plus-10", "0.05", "0.06"),  # 0.055
        ("plus-10", "0.15", "0.16"),  # 0.165
        ("plus-10", "1000000.00", "1100000.00"),
        ("double", "33.33", "66.66"),
        ("double", "1000000.00", "2000000.00"),
        ("outcome-365", "250.00", "250.00"),
    ],
)
def test_payout_is_the_unrefunded_amount_times_the_percentage_rounded_half_even(
    member: Shop, ledger: Ledger, policy: str, amount: str, payout: str
) -> None:
    member.buy("o-1", amount, guarantee=policy)
    member.at(1)
    result = claim(ledger, "o-1")
    assert (result["payout"], result["refunded_amount"]) == (payout, amount)
    assert result["policy"] == policy
    assert answers(ledger).purchase("o-1")["claim"]["payout"] == payout


def test_payout_rounds_to_the_minor_unit_of_the_programs_currency(
    member: Shop, ledger: Ledger
) -> None:
    ledger.publish_program(replace(ProgramRules(), currency="JPY"), "test")
    for order_id, amount in (("o-1", "105"), ("o-2", "115")):
        answers(ledger).record_purchase(
            order_id, "m1", Decimal(amount), "JPY", None, [], "plus-10", "test"
        )
    member.at(1)
    # 115.5 yen goes to the even 116; 126.5 yen to the even 126.
    assert claim(ledger, "o-1", "c-1")["payout"] == "116"
    assert claim(ledger, "o-2", "c-2")["payout"] == "126"


def test_partial_refunds_before_a_claim_reduce_the_payout(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", guarantee="plus-10")
    member.refund("o-1", "r-1", "30.00")
    member.refund("o-1", "r-2", "9.95")
    result = claim(ledger, "o-1")
    assert result["refunded_amount"] == "60.05"
    assert result["payout"] == "66.06"  # 66.055, half-even
    view = answers(ledger).purchase("o-1")
    assert view["refunded_amount"] == "100.00"
    assert [r["amount"] for r in view["refunds"]] == ["30.00", "9.95", "60.05"]


# The window.


@pytest.mark.parametrize("policy", sorted(WINDOWS))
def test_the_last_second_of_the_window_is_inside_and_its_end_is_outside(
    member: Shop, ledger: Ledger, clock: Any, policy: str
) -> None:
    member.buy("o-1", "80.00", guarantee=policy)
    member.buy("o-2", "80.00", guarantee=policy)
    closes = day(WINDOWS[policy])
    assert answers(ledger).purchase("o-1")["guarantee"]["expires_at"] == closes.isoformat()
    clock.set(closes - timedelta(seconds=1))
    assert claim(ledger, "o-1")["claimed_at"] == (closes - timedelta(seconds=1)).isoformat()
    clock.set(closes)
    with pytest.raises(GuaranteeWindowClosed) as refused:
        answers(ledger).claim_guarantee("o-2", "c-2", "not satisfied", "test")
    assert closes.isoformat() in refused.value.message
    assert answers(ledger).purchase("o-2")["claim"] is None
    assert len(member.events(kind="GuaranteeClaimed")) == 1


def test_the_window_runs_from_when_a_late_order_took_effect(member: Shop, ledger: Ledger) -> None:
    member.at(10).buy("o-1", "10.00")
    # Dated day 5, but the member's business time is day 10: it takes effect there.
    member.buy("o-2", "80.00", guarantee="satisfaction", occurred_at=day(5))
    assert answers(ledger).purchase("o-2")["guarantee"]["expires_at"] == day(40).isoformat()
    member.at(39)
    assert claim(ledger, "o-2")["payout"] == "80.00"


def test_a_repeat_after_the_window_closed_still_returns_the_first_answer(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "80.00", guarantee="satisfaction")
    first = claim(ledger, "o-1")
    member.at(31)
    assert answers(ledger).claim_guarantee("o-1", "c-1", "not satisfied", "again") == (first, False)


# Refused claims.


def test_a_second_claim_is_a_conflict_and_changes_nothing(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "80.00", guarantee="satisfaction")
    first = claim(ledger, "o-1")
    with pytest.raises(Conflict) as other_id:
        answers(ledger).claim_guarantee("o-1", "c-2", "not satisfied", "test")
    assert other_id.value.field == "claim_id"
    with pytest.raises(Conflict) as other_evidence:
        answers(ledger).claim_guarantee("o-1", "c-1", "something else", "test")
    assert other_evidence.value.field == "evidence"
    assert answers(ledger).claim_guarantee("o-1", "c-1", "not satisfied", "test") == (first, False)
    assert len(member.events(kind="GuaranteeClaimed")) == 1
    assert len(member.events(kind="PurchaseRefunded")) == 1


@pytest.mark.parametrize("evidence", [None, "", "   \n"])
@pytest.mark.parametrize("policy", ["double", "outcome-365"])
def test_evidence_is_required_where_the_policy_says_so(
    member: Shop, ledger: Ledger, policy: str, evidence: str | None
) -> None:
    member.buy("o-1", "80.00", guarantee=policy)
    with pytest.raises(EvidenceRequired) as refused:
        answers(ledger).claim_guarantee("o-1", "c-1", evidence, "test")
    assert refused.value.field == "evidence"
    assert member.points()["pending"] == 80
    assert claim(ledger, "o-1", "c-2", evidence="it broke")["evidence"] == "it broke"


def test_policies_without_a_condition_need_no_evidence(member: Shop, ledger: Ledger) -> None:
    for order_id, policy in (("o-1", "satisfaction"), ("o-2", "trial-90"), ("o-3", "plus-10")):
        member.buy(order_id, "10.00", guarantee=policy)
        assert claim(ledger, order_id, evidence=None)["evidence"] is None


def test_a_purchase_without_a_guarantee_cannot_be_claimed(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "80.00")
    with pytest.raises(NoGuarantee):
        answers(ledger).claim_guarantee("o-1", "c-1", None, "test")
    with pytest.raises(UnknownOrder):
        answers(ledger).claim_guarantee("o-404", "c-1", None, "test")
    assert member.events(kind="GuaranteeClaimed") == []


def test_a_refund_after_a_claim_is_refused(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "80.00", guarantee="satisfaction")
    member.refund("o-1", "r-1", "30.00")
    claim(ledger, "o-1")
    with pytest.raises(GuaranteeAlreadyClaimed):
        answers(ledger).refund("o-1", "r-2", Decimal("1.00"), None, "test")
    # Repeating the refund made before the claim still answers as it did.
    again, created = answers(ledger).refund("o-1", "r-1", Decimal("30.00"), None, "test")
    assert (again["amount"], created) == ("30.00", False)


def test_an_order_refunded_in_full_has_nothing_left_to_claim(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "80.00", guarantee="satisfaction")
    member.refund("o-1", "r-1")
    with pytest.raises(OverRefund):
        answers(ledger).claim_guarantee("o-1", "c-1", None, "test")
    assert member.events(kind="GuaranteeClaimed") == []


def test_a_storefront_refund_id_never_collides_with_a_claims_refund(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.refund("o-1", "guarantee-claim:c-1", "10.00")
    assert claim(ledger, "o-1", "c-1")["refunded_amount"] == "90.00"
    view = answers(ledger).purchase("o-1")
    assert [r["amount"] for r in view["refunds"]] == ["10.00", "90.00"]
    assert len({r["refund_id"] for r in view["refunds"]}) == 2
    again, created = answers(ledger).refund(
        "o-1", "guarantee-claim:c-1", Decimal("10.00"), None, "test"
    )
    assert (again["amount"], created) == ("10.00", False)


# Points and tiers.


def test_a_claim_claws_back_all_the_remaining_points_after_earlier_partial_refunds(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-0", "100.00")  # 100 points, available on day 30
    member.at(31).redeem("x-1", points=40)
    member.buy("o-1", "100.00", categories=["books"], guarantee="plus-10")  # 100 + 50 bonus
    assert member.refund("o-1", "r-1", "33.33")["points_clawed_back"] == 50  # ceil(49.995)
    # ceil(150 x 43.33 / 100) = ceil(64.995) = 65 in all
    assert member.refund("o-1", "r-2", "10.00")["points_clawed_back"] == 15
    result = answers(member.at(40).ledger).claim_guarantee("o-1", "c-1", None, "test")[0]
    assert result["points_clawed_back"] == 85  # all the remaining 150 - 65
    assert answers(ledger).purchase("o-1")["points_clawed_back"] == 150
    points = member.points()
    assert (points["available"], points["pending"]) == (60, 0), "o-0's lot is untouched"
    assert (points["lifetime_earned"], points["clawed_back"], points["redeemed"]) == (250, 150, 40)
    check_balance(points)


def test_a_claim_re_evaluates_the_tier(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "400.00")
    assert member.at(2).buy("o-2", "150.00", guarantee="satisfaction")["tier"] == "silver"
    result = claim(member.at(9).ledger, "o-2")
    assert (result["tier"], result["tier_changed"]) == ("bronze", True)
    assert member.tier() == "bronze"
    downgrades = member.events(kind="TierDowngraded")
    assert [d["data"]["reason"] for d in downgrades] == ["refund"]


def test_a_program_change_keeps_the_promise_a_purchase_was_sold_with(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", guarantee="satisfaction")
    rules = ProgramRules()
    changed = tuple(
        GuaranteePolicy(g.name, 150, 60, True) if g.name == "satisfaction" else g
        for g in rules.guarantees
    )
    ledger.publish_program(replace(rules, guarantees=changed), "test")
    member.buy("o-2", "100.00", guarantee="satisfaction")
    assert answers(ledger).purchase("o-1")["guarantee"] == {
        "policy": "satisfaction",
        "refund_percent": 100,
        "evidence_required": False,
        "expires_at": day(30).isoformat(),
    }
    member.at(29)
    assert claim(ledger, "o-1", evidence=None)["payout"] == "100.00"
    with pytest.raises(EvidenceRequired):
        answers(ledger).claim_guarantee("o-2", "c-2", None, "test")
    assert claim(ledger, "o-2", "c-2")["payout"] == "150.00"


# Events and replay.


def test_the_claim_records_the_refund_then_guarantee_claimed_with_the_requests_cause(
    member: Shop, ledger: Ledger
) -> None:
    member.buy("o-1", "100.00", guarantee="double")
    member.refund("o-1", "r-1", "10.00")
    member.at(3)
    claim(ledger, "o-1", evidence="it broke", cause="request:abc")
    events = member.events()
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["PurchaseRefunded", "GuaranteeClaimed"]
    refunded, claimed = (e["data"] for e in events[-2:])
    assert claimed == {
        "member_id": "m1",
        "at": day(3).isoformat(),
        "cause": "request:abc",
        "program_version": 1,
        "order_id": "o-1",
        "claim_id": "c-1",
        "evidence": "it broke",
        "policy": "double",
        "refund_percent": 200,
        "unrefunded": "90.00",
        "payout": "180.00",
        "refund_id": refunded["refund_id"],
    }
    assert refunded["cause"] == "request:abc"
    assert (refunded["order_id"], refunded["amount"]) == ("o-1", "90.00")
    assert refunded["reason"] == "guarantee claim"
    assert refunded["points_clawed_back"] == 90
    assert refunded["refund_id"] != "r-1"


def test_replaying_the_events_gives_the_same_purchase_view_and_status(
    member: Shop, ledger: Ledger, clock: Any
) -> None:
    member.buy("o-1", "100.00", categories=["books"], guarantee="plus-10")
    member.buy("o-2", "20.00", guarantee="trial-90")
    member.at(5).refund("o-1", "r-1", "25.00")
    claim(member.at(10).ledger, "o-1")
    member.at(100)
    uid = member_uuid("m1")
    events: list[Any] = list(ledger.events.get(uid))
    replayed: Member = functools.reduce(lambda m, e: e.mutate(m), events, None)
    for order_id in ("o-1", "o-2"):
        view = representations.purchase(replayed.purchases[order_id])
        assert view == answers(ledger).purchase(order_id)
    claimed = representations.claim(replayed.purchases["o-1"])
    assert claimed == answers(ledger).purchase("o-1")["claim"]
    replayed_status = representations.status(replayed.status(clock.now(), ledger.terms()))
    assert representations.opened(replayed_status, ledger.sealer) == member.status()


# Liability.


def figures(
    guaranteed: int, open_: int, max_payout: str, claims: int, payouts: str, rate: float
) -> dict[str, Any]:
    return {
        "guaranteed_purchases": guaranteed,
        "open": open_,
        "max_payout": max_payout,
        "claims": claims,
        "payouts": payouts,
        "claim_rate": rate,
    }


def liability(ledger: Ledger, as_of: Any = None) -> dict[str, Any]:
    guarantees: dict[str, Any] = ledger.analytics_summary(as_of)["guarantees"]
    by_policy = guarantees.pop("by_policy")
    return {"all": guarantees, **by_policy}


def test_liability_as_of_past_instants(member: Shop, ledger: Ledger) -> None:
    member.enrol("m2")
    member.buy("o-1", "100.00", guarantee="satisfaction")
    member.buy("o-2", "10.05", guarantee="plus-10")
    member.buy("o-3", "70.00", member_id="m2")  # no guarantee: no promise
    member.at(5).refund("o-1", "r-1", "50.00")
    claim(member.at(10).ledger, "o-2")
    member.at(40)

    assert liability(ledger, START - timedelta(seconds=1)) == {
        "all": figures(0, 0, "0.00", 0, "0.00", 0.0)
    }
    start = {
        "all": figures(2, 2, "111.06", 0, "0.00", 0.0),
        "plus-10": figures(1, 1, "11.06", 0, "0.00", 0.0),  # 11.055, half-even
        "satisfaction": figures(1, 1, "100.00", 0, "0.00", 0.0),
    }
    assert liability(ledger, day(0)) == start
    assert liability(ledger, day(5) - timedelta(seconds=1)) == start
    assert liability(ledger, day(5)) == {
        "all": figures(2, 2, "61.06", 0, "0.00", 0.0),
        "plus-10": figures(1, 1, "11.06", 0, "0.00", 0.0),
        "satisfaction": figures(1, 1, "50.00", 0, "0.00", 0.0),
    }
    claimed = {
        "all": figures(2, 1, "50.00", 1, "11.06", 0.5),
        "plus-10": figures(1, 0, "0.00", 1, "11.06", 1.0),
        "satisfaction": figures(1, 1, "50.00", 0, "0.00", 0.0),
    }
    assert liability(ledger, day(10)) == claimed
    assert liability(ledger, day(30) - timedelta(seconds=1)) == claimed
    closed = {
        "all": figures(2, 0, "0.00", 1, "11.06", 0.5),
        "plus-10": figures(1, 0, "0.00", 1, "11.06", 1.0),
        "satisfaction": figures(1, 0, "0.00", 0, "0.00", 0.0),
    }
    assert liability(ledger, day(30)) == closed
    assert liability(ledger) == closed
    summary = ledger.analytics_summary(day(10))
    assert (summary["as_of"], summary["currency"]) == (day(10).isoformat(), "USD")


def test_an_order_refunded_in_full_is_no_open_promise(member: Shop, ledger: Ledger) -> None:
    member.buy("o-1", "100.00", guarantee="trial-90")
    member.buy("o-2", "40.00", guarantee="trial-90")
    member.refund("o-1", "r-1")
    assert liability(ledger)["trial-90"] == figures(2, 1, "40.00", 0, "0.00", 0.0)


def test_liability_as_of_an_instant_counts_what_was_recorded_by_then_in_any_log_order(
    member: Shop, ledger: Ledger, clock: Any
) -> None:
    member.enrol("m2")
    member.at(10).buy("o-1", "100.00", guarantee="trial-90")
    # Another process whose request started earlier commits later in the log.
    clock.set(day(5))
    member.buy("o-2", "40.00", member_id="m2", guarantee="trial-90")
    assert liability(ledger, day(7))["trial-90"] == figures(1, 1, "40.00", 0, "0.00", 0.0)
    assert liability(ledger, day(10))["trial-90"] == figures(2, 2, "140.00", 0, "0.00", 0.0)
