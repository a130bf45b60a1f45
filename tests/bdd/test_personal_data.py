"""Scenarios of features/personal_data.feature, with the steps only they use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pytest_bdd import given, scenarios, then, when

from adapters.export import export_lines, verify_lines
from tests.bdd.conftest import World, ask_each, enrol_with_code, referral_code_of, step
from tests.plaintext import plain_hits

scenarios("personal_data.feature")


@given(step('"{member_id:q}" is enrolled with the email "{email:q}" and the name "{name:q}"'))
def enrolled_with_name(world: World, member_id: str, email: str, name: str) -> None:
    body = {"member_id": member_id, "email": email, "name": name}
    response = world.call("POST", "/v1/members", "storefront", body)
    assert response.status_code == 201, response.json


@then(step('no table of the store holds "{email:q}" or "{name:q}" in plain text'))
def nothing_in_plain_text(world: World, database_url: str, email: str, name: str) -> None:
    assert plain_hits(database_url, [email, name]) == []


@then(step('the status of "{member_id:q}" shows the email "{email:q}" and the name "{name:q}"'))
def status_shows(world: World, member_id: str, email: str, name: str) -> None:
    status = world.status(member_id)
    assert (status["email"], status["name"], status["personal_data"]) == (email, name, "held")


def ask_personal_data(world: World, caller: str, member_id: str) -> Any:
    return world.call("GET", f"/v1/members/{member_id}/personal-data", caller)


def erase(world: World, caller: str, member_id: str) -> Any:
    return world.call("DELETE", f"/v1/members/{member_id}/personal-data", caller)


@when(step('{caller:caller} asks for the personal data of "{member_id:q}"'))
def asks_for_personal_data(world: World, caller: str, member_id: str) -> None:
    ask_personal_data(world, caller, member_id)


@then(
    step(
        'the personal data shows the email "{email:q}", the purchase "{order_id:q}" and every '
        'event of "{member_id:q}"'
    )
)
def personal_data_shows(world: World, email: str, order_id: str, member_id: str) -> None:
    report = world.body()
    assert report["email"] == email and report["personal_data"] == "held"
    assert [p["order_id"] for p in report["purchases"]] == [order_id]
    assert [e["version"] for e in report["events"]] == [
        e["version"] for e in world.events(member_id)
    ]


@given(step('the admin erased the personal data of "{member_id:q}"'))
def admin_erased(world: World, member_id: str) -> None:
    response = erase(world, "admin", member_id)
    assert response.status_code == 200, response.json
    world.first[("DELETE", member_id, "erasure")] = response


@when(step('the {caller:caller} erases the personal data of "{member_id:q}"'))
def erases(world: World, caller: str, member_id: str) -> None:
    erase(world, caller, member_id)


@then(step('the status of "{member_id:q}" shows no email, no name and the personal data "erased"'))
def status_erased(world: World, member_id: str) -> None:
    status = world.status(member_id)
    assert (status["email"], status["name"], status["personal_data"]) == (None, None, "erased")


@then(step('the event log shows the erasure of "{member_id:q}" by the admin\'s key'))
def erasure_in_log(world: World, member_id: str) -> None:
    erasures = [e for e in world.events(member_id) if e["type"] == "PersonalDataErased"]
    assert len(erasures) == 1, erasures
    actor = erasures[0]["actor"]
    assert actor["kind"] == "key" and actor["role"] == "admin" and actor["name"] == "bdd admin"
    assert erasures[0]["data"]["erased"] == ["email", "name"]


@then("the export of the ledger verifies")
def export_verifies(world: World) -> None:
    lines = list(export_lines(world.ledger.event_log, datetime.now(UTC)))
    assert verify_lines(lines).ok
    assert any('"type":"PersonalDataErased"' in line for line in lines)


@then("the receipt is the one of the first erasure")
def same_receipt(world: World) -> None:
    first = next(r for k, r in world.first.items() if k[2] == "erasure")
    assert world.body() == first.get_json()


@when(step('these callers erase the personal data of "{member_id:q}":'))
def callers_erase(world: World, member_id: str, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: erase(world, caller, member_id))


@when(step('these callers ask for the personal data of "{member_id:q}":'))
def callers_ask(world: World, member_id: str, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: ask_personal_data(world, caller, member_id))


@when(
    step(
        'a friend enrols as "{member_id:q}" with the email "{email:q}" and the code of '
        '"{referrer:q}"'
    )
)
def friend_enrols(world: World, member_id: str, email: str, referrer: str) -> None:
    enrol_with_code(world, "storefront", member_id, email, referral_code_of(world, referrer))
