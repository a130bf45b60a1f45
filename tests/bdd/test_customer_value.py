"""Scenarios of features/customer_value.feature, with the steps only customer value needs."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from pytest_bdd import given, scenarios, then, when
from werkzeug.test import TestResponse

from tests.bdd.conftest import World, ask_each, instant, purchase_body, step

scenarios("customer_value.feature")

MEMBERS = "/v1/analytics/members"
VALUE_COLUMNS = ["member", "class", "net contribution", "stage"]


def read_values(world: World, caller: str = "auditor", **query: Any) -> TestResponse:
    path = f"{MEMBERS}?{urlencode(query)}" if query else MEMBERS
    return world.call("GET", path, caller)


def all_values(world: World, as_of: str | None = None) -> dict[str, Any]:
    """Every page of the customer values, as one body whose items are every member."""
    query: dict[str, Any] = {"limit": 4} | ({} if as_of is None else {"as_of": as_of})
    items: list[dict[str, Any]] = []
    while True:
        response = read_values(world, **query)
        assert response.status_code == 200, response.json
        body: dict[str, Any] = response.get_json()
        assert len(body["items"]) <= 4, body
        items.extend(body["items"])
        if body["next"] is None:
            body["items"] = items
            expected = world.clock.now() if as_of is None else instant(as_of)
            assert instant(body["as_of"]) == expected, body
            assert body["currency"] == "USD", body
            return body
        query["cursor"] = body["next"]


def member_value(world: World, member_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        m for m in all_values(world)["items"] if m["member_id"] == member_id
    )
    return found


def value_rows(body: dict[str, Any]) -> list[list[str]]:
    return [
        [m["member_id"], m["value_class"] or "", m["net_contribution"], m["stage"]]
        for m in body["items"]
    ]


# History.


@given(step("these members are enrolled: {names}"))
def members_are_enrolled(world: World, names: str) -> None:
    for member_id in re.findall(r'"([^"]+)"', names):
        body = {"member_id": member_id, "email": f"{member_id}@example.com"}
        response = world.call("POST", "/v1/members", "storefront", body)
        assert response.status_code == 201, response.json


@given(
    step('"{member_id:q}" bought "{order_id:q}" for "{amount:q}" under the "{policy:q}" guarantee')
)
def bought_under_guarantee(
    world: World, member_id: str, order_id: str, amount: str, policy: str
) -> None:
    body = purchase_body(order_id, amount, member_id, guarantee=policy)
    response = world.call("POST", "/v1/purchases", "storefront", body)
    assert response.status_code == 201, response.json
    assert world.body()["guarantee"]["policy"] == policy, response.json


@given(
    step(
        '"{member_id:q}" claimed the guarantee of order "{order_id:q}" as "{claim_id:q}" '
        'with the evidence "{evidence:q}"'
    )
)
def claimed_guarantee(
    world: World, member_id: str, order_id: str, claim_id: str, evidence: str
) -> None:
    body = {"claim_id": claim_id, "evidence": evidence}
    response = world.call("POST", f"/v1/purchases/{order_id}/guarantee-claims", "storefront", body)
    assert response.status_code == 201, response.json
    assert world.purchase(order_id)["member_id"] == member_id


# Reads.


@then(step("the customer values are:"))
def customer_values_are(world: World, datatable: list[list[str]]) -> None:
    assert datatable[0] == VALUE_COLUMNS
    assert value_rows(all_values(world)) == datatable[1:]


@then(step('the customer values as of "{as_of:q}" are:'))
def customer_values_as_of(world: World, as_of: str, datatable: list[list[str]]) -> None:
    assert datatable[0] == VALUE_COLUMNS
    assert value_rows(all_values(world, as_of)) == datatable[1:]


@then("the stage of every member is the one its status shows")
def stages_match_status(world: World) -> None:
    for member in all_values(world)["items"]:
        assert member["stage"] == world.status(member["member_id"])["stage"], member


@then(step("the RFM scores are:"))
def rfm_scores_are(world: World, datatable: list[list[str]]) -> None:
    assert datatable[0] == ["member", "recency days", "recency", "frequency", "monetary"]
    found = [
        [
            m["member_id"],
            *(str(m["rfm"][k]) for k in ("recency_days", "recency", "frequency", "monetary")),
        ]
        for m in all_values(world)["items"]
        if m["rfm"] is not None
    ]
    assert found == datatable[1:]


@then(step('"{member_id:q}" has no value class and no RFM scores'))
def no_value_class(world: World, member_id: str) -> None:
    member = member_value(world, member_id)
    assert (member["value_class"], member["rfm"], member["purchases"]) == (None, None, 0), member


@then(
    step(
        '"{member_id:q}" has a lifetime value of "{ltv:q}" from {count:d} purchases '
        'averaging "{aov:q}"'
    )
)
def lifetime_value(world: World, member_id: str, ltv: str, count: int, aov: str) -> None:
    member = member_value(world, member_id)
    found = (member["lifetime_value"], member["purchases"], member["average_order_value"])
    assert found == (ltv, count, aov), member


@then(step('"{member_id:q}" makes {rate:g} purchases per year of tenure'))
def purchases_per_year(world: World, member_id: str, rate: float) -> None:
    member = member_value(world, member_id)
    assert member["purchases_per_year"] == rate, member


@then(
    step("the top 20% bring {share:g} of the net contribution of {count:d} members with purchases")
)
def pareto_share(world: World, share: float, count: int) -> None:
    body = all_values(world)
    assert (body["pareto_top20_share"], body["members_with_purchases"]) == (share, count), body


@then(
    step(
        'as of "{as_of:q}" the top 20% bring {share:g} of the net contribution of {count:d} '
        "members with purchases"
    )
)
def pareto_share_as_of(world: World, as_of: str, share: float, count: int) -> None:
    body = all_values(world, as_of)
    assert (body["pareto_top20_share"], body["members_with_purchases"]) == (share, count), body


# Listing one class.


@pytest.fixture
def pages() -> list[str]:
    """The member ids of each page read, joined with commas."""
    return []


@when(step('the auditor lists the members of value class "{value_class:q}" {size:d} at a time'))
def list_class(world: World, pages: list[str], value_class: str, size: int) -> None:
    pages.clear()
    query: dict[str, Any] = {"class": value_class, "limit": size}
    while True:
        response = read_values(world, **query)
        assert response.status_code == 200, response.json
        body = response.get_json()
        assert all(m["value_class"] == value_class for m in body["items"]), body
        pages.append(", ".join(m["member_id"] for m in body["items"]))
        if body["next"] is None:
            return
        query["cursor"] = body["next"]


@then(step('the pages list "{first:q}" and "{second:q}"'))
def pages_list_two(pages: list[str], first: str, second: str) -> None:
    assert pages == [first, second]


@then(step('the pages list "{first:q}"'))
def pages_list_one(pages: list[str], first: str) -> None:
    assert pages == [first]


@when(step('the auditor asks for the members of value class "{value_class:q}"'))
def ask_for_class(world: World, value_class: str) -> None:
    read_values(world, **{"class": value_class})


@when("these callers read the customer values:")
def callers_read_values(world: World, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: read_values(world, caller))
