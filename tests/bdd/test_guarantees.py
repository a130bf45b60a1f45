"""Scenarios of features/guarantees.feature, with the steps only guarantees need.

The shared steps (purchases, refunds, points, tiers, events, responses) live in conftest.py;
the steps below are defined here so that this capability's specification stays in one place.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import quote

import pytest
from pytest_bdd import given, scenarios, then, when
from werkzeug.test import TestResponse

from tests.bdd.conftest import World, admitted, ask_each, instant, purchase_body, step

scenarios("guarantees.feature")

CLAIMS = "/v1/purchases/{order_id}/guarantee-claims"
NEEDS_EVIDENCE = {"double", "outcome-365"}
LIABILITY_COLUMNS = ("guaranteed", "open", "max payout", "claims", "payouts", "claim rate")


@pytest.fixture
def first_claims() -> dict[tuple[str, str], TestResponse]:
    """The first response to each claim id, so a repeat can be compared with it."""
    return {}


def claim(
    world: World,
    first_claims: dict[tuple[str, str], TestResponse],
    caller: str,
    order_id: str,
    claim_id: str,
    evidence: str | None = None,
) -> None:
    body = {"claim_id": claim_id} | ({} if evidence is None else {"evidence": evidence})
    response = world.call("POST", CLAIMS.format(order_id=order_id), caller, body)
    world.first_of_last = first_claims.setdefault((order_id, claim_id), response)


def json_of(response: TestResponse) -> dict[str, Any]:
    found: dict[str, Any] = response.get_json()
    return found


def claim_body(world: World) -> dict[str, Any]:
    body = world.body()
    assert world.response is not None and world.response.status_code in (200, 201), body
    return body


def guarantee_of(found: dict[str, Any]) -> tuple[str, int, datetime]:
    guarantee = found["guarantee"]
    assert guarantee is not None, found
    return guarantee["policy"], guarantee["refund_percent"], instant(guarantee["expires_at"])


# Time.


@when(step("the clock reaches {moment:instant}"))
def clock_reaches(world: World, moment: datetime) -> None:
    assert moment >= world.clock.now(), "a scenario may not move time backwards"
    world.clock.set(moment)


# Purchases under a guarantee.


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" for "{member_id:q}" '
        'under the guarantees "{first:q}" and "{second:q}"'
    )
)
def post_purchase_with_two_guarantees(
    world: World, caller: str, order_id: str, amount: str, member_id: str, first: str, second: str
) -> None:
    body = purchase_body(order_id, amount, member_id, guarantee=[first, second])
    world.call("POST", "/v1/purchases", caller, body)


@then(
    step(
        'the purchase carries the "{policy:q}" guarantee of {percent:d} percent until '
        '"{closes_at:instant}"'
    )
)
def purchase_carries(world: World, policy: str, percent: int, closes_at: datetime) -> None:
    body = world.body()
    assert world.response is not None and world.response.status_code in (200, 201), body
    assert guarantee_of(body) == (policy, percent, closes_at), body


@then(
    step(
        'purchase "{order_id:q}" carries the "{policy:q}" guarantee of {percent:d} percent until '
        '"{closes_at:instant}"'
    )
)
def purchase_read_carries(
    world: World, order_id: str, policy: str, percent: int, closes_at: datetime
) -> None:
    purchase = world.purchase(order_id)
    assert guarantee_of(purchase) == (policy, percent, closes_at), purchase
    assert purchase["guarantee"]["evidence_required"] is (policy in NEEDS_EVIDENCE), purchase


@then(step('the purchase\'s points become available at "{available_at:instant}"'))
def points_become_available(world: World, available_at: datetime) -> None:
    body = world.body()
    assert instant(body["points_available_at"]) == available_at, body


@then(step('purchase "{order_id:q}" has no claim yet'))
def purchase_has_no_claim(world: World, order_id: str) -> None:
    purchase = world.purchase(order_id)
    assert purchase["claim"] is None, purchase
    assert purchase["refunds"] == [], purchase


@then(step('purchase "{order_id:q}" has no guarantee and no claim'))
def purchase_without_guarantee(world: World, order_id: str) -> None:
    purchase = world.purchase(order_id)
    assert (purchase["guarantee"], purchase["claim"]) == (None, None), purchase


# Claims.


@when(step('the {caller:caller} claims the guarantee of order "{order_id:q}" as "{claim_id:q}"'))
def claim_without_evidence(
    world: World,
    first_claims: dict[tuple[str, str], TestResponse],
    caller: str,
    order_id: str,
    claim_id: str,
) -> None:
    claim(world, first_claims, caller, order_id, claim_id)


@when(
    step(
        'the {caller:caller} claims the guarantee of order "{order_id:q}" as "{claim_id:q}" '
        'with the evidence "{evidence:q}"'
    )
)
def claim_with_evidence(
    world: World,
    first_claims: dict[tuple[str, str], TestResponse],
    caller: str,
    order_id: str,
    claim_id: str,
    evidence: str,
) -> None:
    claim(world, first_claims, caller, order_id, claim_id, evidence)


@then(
    step(
        'the claim pays out "{payout:q}" under the "{policy:q}" guarantee of {percent:d} percent '
        'on "{unrefunded:q}"'
    )
)
def claim_pays_out(world: World, payout: str, policy: str, percent: int, unrefunded: str) -> None:
    body = claim_body(world)
    found = (body["payout"], body["policy"], body["refund_percent"], body["refunded_amount"])
    assert found == (payout, policy, percent, unrefunded), body
    assert body["currency"] == "USD", body
    # The rule itself: unrefunded x percent, half-even to the cent.
    exact = Decimal(unrefunded) * percent / 100
    assert Decimal(payout) == exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), body


@then(step("the claim claws back {points:d} points"))
def claim_claws_back(world: World, points: int) -> None:
    body = claim_body(world)
    assert body["points_clawed_back"] == points, body
    purchase = world.purchase(body["order_id"])
    # All the purchase's points are gone: what the refunds and the claim took is what it earned.
    assert purchase["points_clawed_back"] == (
        purchase["points_awarded"] + purchase["bonus_points"]
    ), purchase


@then(step('the claim records the evidence "{evidence:q}"'))
def claim_records_evidence(world: World, evidence: str) -> None:
    body = claim_body(world)
    assert body["evidence"] == evidence, body
    assert world.purchase(body["order_id"])["claim"]["evidence"] == evidence


@then(step('the claim moves "{member_id:q}" down to "{tier:q}"'))
def claim_moves_down(world: World, member_id: str, tier: str) -> None:
    body = claim_body(world)
    assert (body["member_id"], body["tier"], body["tier_changed"]) == (member_id, tier, True), body
    assert world.status(member_id)["tier"]["name"] == tier


@then(step('purchase "{order_id:q}" shows the claim "{claim_id:q}" paying out "{payout:q}"'))
def purchase_shows_claim(world: World, order_id: str, claim_id: str, payout: str) -> None:
    purchase = world.purchase(order_id)
    found = purchase["claim"]
    assert found is not None, purchase
    assert (found["claim_id"], found["order_id"], found["payout"]) == (claim_id, order_id, payout)
    assert purchase["refundable_amount"] == "0.00", purchase
    # The claim's refund is listed with the purchase's refunds, for the amount it refunded.
    refunds = [r for r in purchase["refunds"] if r["reason"] == "guarantee claim"]
    assert [r["amount"] for r in refunds] == [found["refunded_amount"]], purchase


@then(
    step(
        "the response status is {status:d} and the problem says the window closed at "
        '"{closed_at:q}"'
    )
)
def window_closed(world: World, status: int, closed_at: str) -> None:
    assert world.response is not None and world.response.status_code == status, world.body()
    detail = world.body()["detail"]
    assert "window closed" in detail and closed_at in detail, detail


@then("the problem says the order was sold without a guarantee")
def sold_without_guarantee(world: World) -> None:
    detail = world.body()["detail"]
    assert "without a guarantee" in detail, detail


# Referrals.


@given(step('member "{member_id:q}" enrolled with the referral code of "{referrer_id:q}"'))
def enrolled_with_code(world: World, member_id: str, referrer_id: str) -> None:
    code = world.status(referrer_id)["referral_code"]
    body = {"member_id": member_id, "email": f"{member_id}@example.com", "referral_code": code}
    response = world.call("POST", "/v1/members", "storefront", body)
    assert response.status_code == 201, response.json
    assert referral_of(world, member_id, referrer_id)["state"] == "registered"


def referral_of(world: World, referee_id: str, referrer_id: str) -> dict[str, Any]:
    response = world.client.get(
        f"/v1/members/{referrer_id}/referrals",
        headers={"Authorization": f"Bearer {world.api_keys['storefront']}"},
    )
    assert response.status_code == 200, response.json
    found = [r for r in json_of(response)["items"] if r["referee_id"] == referee_id]
    assert len(found) == 1, response.json
    referral: dict[str, Any] = found[0]
    return referral


@then(step('the referral of "{referee_id:q}" by "{referrer_id:q}" is "{state:q}"'))
def referral_state(world: World, referee_id: str, referrer_id: str, state: str) -> None:
    referral = referral_of(world, referee_id, referrer_id)
    assert referral["state"] == state, referral
    if state == "voided":
        assert referral["voided_at"] is not None, referral
        assert (referral["referrer_points"], referral["referee_points"]) == (0, 0), referral


@then(
    step(
        'the referral of "{referee_id:q}" by "{referrer_id:q}" is "{state:q}", worth '
        '{referrer_points:d} points to "{referrer:q}" and {referee_points:d} to "{referee:q}"'
    )
)
def referral_state_worth(
    world: World,
    referee_id: str,
    referrer_id: str,
    state: str,
    referrer_points: int,
    referrer: str,
    referee_points: int,
    referee: str,
) -> None:
    assert (referrer, referee) == (referrer_id, referee_id), "name the referrer first"
    referral_state(world, referee_id, referrer_id, state)
    referral = referral_of(world, referee_id, referrer_id)
    found = (referral["referrer_points"], referral["referee_points"])
    assert found == (referrer_points, referee_points), referral


# The program.


@when(
    step(
        'the {caller:caller} publishes a program version in which the "{policy:q}" guarantee '
        "refunds {percent:d} percent within {days:d} days"
    )
)
def publish_guarantee(world: World, caller: str, policy: str, percent: int, days: int) -> None:
    rules = world.program()["rules"]
    names = [g["name"] for g in rules["guarantees"]]
    assert policy in names
    changed = rules["guarantees"][names.index(policy)]
    changed["refund_percent"], changed["window_days"] = percent, days
    world.call("PUT", "/v1/program", caller, rules)


# Liability.


def summary(world: World, caller: str = "auditor", as_of: str | None = None) -> TestResponse:
    query = "" if as_of is None else f"?as_of={quote(as_of)}"
    return world.call("GET", f"/v1/analytics/summary{query}", caller)


def liability_rows(guarantees: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    def row(figures: dict[str, Any]) -> tuple[Any, ...]:
        return (
            figures["guaranteed_purchases"],
            figures["open"],
            figures["max_payout"],
            figures["claims"],
            figures["payouts"],
            figures["claim_rate"],
        )

    rows = {policy: row(figures) for policy, figures in guarantees["by_policy"].items()}
    rows["all"] = row(guarantees)
    return rows


def expected_rows(datatable: list[list[str]]) -> dict[str, tuple[Any, ...]]:
    header, *rows = datatable
    assert header == ["policy", *LIABILITY_COLUMNS], header
    return {r[0]: (int(r[1]), int(r[2]), r[3], int(r[4]), r[5], float(r[6])) for r in rows}


def check_liability(world: World, response: TestResponse, datatable: list[list[str]]) -> None:
    assert response.status_code == 200, response.json
    body = json_of(response)
    assert body["currency"] == "USD", body
    expected = expected_rows(datatable)
    assert liability_rows(body["guarantees"]) == expected, body["guarantees"]
    by_policy = body["guarantees"]["by_policy"]
    # The total is the sum of the policies' figures.
    total = sum((Decimal(p["max_payout"]) for p in by_policy.values()), Decimal(0))
    assert Decimal(body["guarantees"]["max_payout"]) == total, body


@then(step("the guarantee liability is:"))
def liability_is(world: World, datatable: list[list[str]]) -> None:
    response = summary(world)
    check_liability(world, response, datatable)
    assert instant(json_of(response)["as_of"]) == world.clock.now(), response.json


@then(step('the guarantee liability as of "{as_of:q}" is:'))
def liability_as_of(world: World, as_of: str, datatable: list[list[str]]) -> None:
    response = summary(world, as_of=as_of)
    check_liability(world, response, datatable)
    assert instant(json_of(response)["as_of"]) == instant(as_of), response.json


@when("these callers read the analytics summary:")
def callers_read_summary(world: World, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: summary(world, caller))


@then(step("every caller who may read it finds {count:d} open guarantee"))
@then(step("every caller who may read it finds {count:d} open guarantees"))
def summary_open_guarantees(world: World, count: int) -> None:
    for body in admitted(world):
        assert body["guarantees"]["open"] == count, body
