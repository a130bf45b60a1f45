"""Step definitions for features/*.feature: the HTTP API through Flask's test client.

The app and the ledger share one FixedClock, so "N days pass" moves business time for both; the
scheduler is the ledger's own ``record_due``. Every scenario runs on SQLite and on PostgreSQL
through the ``database_url`` fixture of tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import parse
import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg import sql
from pytest_bdd import given, parsers, then, when
from werkzeug.test import TestResponse

from adapters.keys import KEY_ROLES
from adapters.settings import Settings
from api.app import create_app
from api.bootstrap import bootstrap
from domain.clock import FixedClock
from domain.ledger import Ledger
from tests.conftest import fresh_postgres_database

# Before every time a scenario names, so the program's first version is already in force.
START = datetime(2026, 1, 1, tzinfo=UTC)
PROBLEM = "application/problem+json"
# The most specific id first: a purchase names its member too, but is known by its order id.
ID_FIELDS = ("refund_id", "redemption_id", "order_id", "member_id")
CALLER_PATTERN = (
    r"storefront|auditor|admin|member [A-Za-z0-9._:-]+|anonymous caller"
    r"|holder of an unknown key|holder of a tampered member token for [A-Za-z0-9._:-]+"
)


@parse.with_pattern(r'[^"]*')
def _quoted(text: str) -> str:
    return text


@parse.with_pattern(CALLER_PATTERN)
def _caller(text: str) -> str:
    return text


@parse.with_pattern(r"\S+")
def _instant(text: str) -> datetime:
    return instant(text)


TYPES = {"q": _quoted, "caller": _caller, "instant": _instant}


def step(text: str) -> Any:
    """A step pattern; ``{name:q}`` is the text between double quotes."""
    return parsers.parse(text, extra_types=TYPES)


def instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} has no UTC offset"
    return moment


@dataclass
class Token:
    value: str
    expires_at: datetime
    pinned: bool  # minted by the scenario itself: used as is, even once it has expired


@dataclass
class World:
    client: FlaskClient
    clock: FixedClock
    ledger: Ledger
    api_keys: dict[str, str]
    tokens: dict[str, Token] = field(default_factory=dict)
    response: TestResponse | None = None
    first: dict[tuple[str, str, str], TestResponse] = field(default_factory=dict)
    first_of_last: TestResponse | None = None
    scheduler_recorded: int | None = None
    answers: list[tuple[str, int, TestResponse]] = field(default_factory=list)

    # Requests.

    def call(
        self, method: str, path: str, caller: str = "storefront", body: Any = None
    ) -> TestResponse:
        headers = self.credentials(caller)
        response = self.client.open(path, method=method, json=body, headers=headers)
        assert response.status_code < 500, (
            f"{method} {path}: {response.status_code} {response.data!r}"
        )
        if response.status_code >= 400:
            assert response.mimetype == PROBLEM, f"{method} {path}: error as {response.mimetype}"
        self.response = response
        self.first_of_last = None
        if method == "POST" and isinstance(body, dict):
            ident = next((str(body[k]) for k in ID_FIELDS if k in body), None)
            if ident is not None:
                key = (method, path, ident)
                self.first_of_last = self.first.setdefault(key, response)
        return response

    def credentials(self, caller: str) -> dict[str, str]:
        if caller == "anonymous caller":
            return {}
        if caller == "holder of an unknown key":
            return {"Authorization": "Bearer dfk_this-key-was-never-issued"}
        if caller.startswith("holder of a tampered member token for "):
            token = self.member_token(caller.rsplit(" ", 1)[1])
            cut = token.rindex(".") + 1  # the first character of the signature
            tampered = token[:cut] + ("A" if token[cut] != "A" else "B") + token[cut + 1 :]
            return {"Authorization": f"Bearer {tampered}"}
        if caller.startswith("member "):
            return {"Authorization": f"Bearer {self.member_token(caller.split(' ', 1)[1])}"}
        return {"Authorization": f"Bearer {self.api_keys[caller]}"}

    def member_token(self, member_id: str, ttl_seconds: int | None = None) -> str:
        held = self.tokens.get(member_id)
        fresh = held is not None and (
            held.pinned or held.expires_at > self.clock.now() + timedelta(seconds=5)
        )
        if ttl_seconds is None and held is not None and fresh:
            return held.value
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        response = self.client.post(
            f"/v1/members/{member_id}/tokens",
            json=body,
            headers={"Authorization": f"Bearer {self.api_keys['storefront']}"},
        )
        assert response.status_code == 201, response.json
        token = Token(
            response.json["token"], instant(response.json["expires_at"]), ttl_seconds is not None
        )
        self.tokens[member_id] = token
        return token.value

    def body(self) -> dict[str, Any]:
        assert self.response is not None, "no request was sent"
        found: dict[str, Any] = self.response.get_json()
        return found

    # Reads for the assertions.

    def status(self, member_id: str) -> dict[str, Any]:
        response = self.client.get(
            f"/v1/members/{member_id}",
            headers={"Authorization": f"Bearer {self.api_keys['storefront']}"},
        )
        assert response.status_code == 200, response.json
        status: dict[str, Any] = response.json
        points = status["points"]
        # API.md: available + pending = lifetime_earned - clawed_back - redeemed - expired
        assert points["available"] + points["pending"] == (
            points["lifetime_earned"]
            - points["clawed_back"]
            - points["redeemed"]
            - points["expired"]
        ), points
        return status

    def events(self, member_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            response = self.client.get(
                f"/v1/members/{member_id}/events{query}",
                headers={"Authorization": f"Bearer {self.api_keys['auditor']}"},
            )
            assert response.status_code == 200, response.json
            events.extend(response.json["items"])
            cursor = response.json["next"]
            if not cursor:
                return events

    def purchase(self, order_id: str) -> dict[str, Any]:
        response = self.client.get(
            f"/v1/purchases/{order_id}",
            headers={"Authorization": f"Bearer {self.api_keys['storefront']}"},
        )
        assert response.status_code == 200, response.json
        found: dict[str, Any] = response.json
        return found

    def program(self) -> dict[str, Any]:
        response = self.client.get(
            "/v1/program", headers={"Authorization": f"Bearer {self.api_keys['auditor']}"}
        )
        assert response.status_code == 200, response.json
        found: dict[str, Any] = response.json
        return found


@pytest.fixture(scope="session")
def bdd_postgres_database(postgres_server: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def postgres_url(bdd_postgres_database: str) -> Iterator[str]:
    """A fresh schema in one database for all scenarios: a CREATE DATABASE each costs 0.4 s."""
    schema = f"bdd_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(bdd_postgres_database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        separator = "&" if "?" in bdd_postgres_database else "?"
        yield f"{bdd_postgres_database}{separator}schema={schema}"
    finally:
        with psycopg.connect(bdd_postgres_database, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# autouse puts ``world`` (and so the parametrized ``database_url``) in every scenario's static
# fixture closure: steps ask for their fixtures only at run time, too late to parametrize.
@pytest.fixture(autouse=True)
def world(database_url: str) -> Iterator[World]:
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    try:
        app = create_app(ledger, keys, token_secret=secret, clock=clock)
        api_keys = {role: keys.create(role, f"bdd {role}") for role in KEY_ROLES}
        yield World(app.test_client(), clock, ledger, api_keys)
    finally:
        ledger.close()
        keys.close()


def purchase_body(order_id: str, amount: Any, member_id: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "member_id": member_id, "amount": amount, "currency": "USD"} | {
        k: v for k, v in extra.items() if v is not None
    }


def problem_fields(world: World) -> dict[str, Any]:
    body = world.body()
    errors: dict[str, Any] = body.get("errors") or {}
    return errors


# Background.


@given("the program's defaults")
def program_defaults(world: World) -> None:
    program = world.program()
    rules = program["rules"]
    assert program["version"] == 1
    assert rules["currency"] == "USD"
    earning = rules["earning"]
    assert earning["points_per_currency_unit"] == 1
    assert earning["cross_sell_bonus"] == 50
    assert earning["return_window_days"] == 30
    assert earning["lot_lifetime_days"] == 730
    assert rules["tier_period_days"] == 365
    tiers = [(t["name"], Decimal(t["threshold"]), Decimal(t["multiplier"])) for t in rules["tiers"]]
    assert tiers == [
        ("bronze", Decimal(0), Decimal("1.0")),
        ("silver", Decimal(500), Decimal("1.25")),
        ("gold", Decimal(2000), Decimal("1.5")),
        ("platinum", Decimal(5000), Decimal("2.0")),
    ]
    guarantees = {g["name"]: g["window_days"] for g in rules["guarantees"]}
    assert guarantees["trial-90"] == 90
    rewards = {r["id"]: r["points"] for r in rules["rewards"]}
    assert rewards == {"coffee": 500, "voucher-10": 1000, "free-shipping": 300}
    assert rules["notices"] == {"expiry_notice_days": 30, "guarantee_notice_days": 7}


@given(step("it is {moment:instant}"))
def it_is(world: World, moment: datetime) -> None:
    assert moment >= world.clock.now(), "a scenario may not move time backwards"
    world.clock.set(moment)


@given(step('member "{member_id:q}" is enrolled'))
def member_is_enrolled(world: World, member_id: str) -> None:
    body = {"member_id": member_id, "email": f"{member_id}@example.com"}
    response = world.call("POST", "/v1/members", "storefront", body)
    assert response.status_code == 201, response.json
    assert response.json["member_id"] == member_id
    assert response.json["tier"]["name"] == "bronze"


@given(step('"{member_id:q}" bought "{order_id:q}" for "{amount:q}"'))
def member_bought(world: World, member_id: str, order_id: str, amount: str) -> None:
    response = world.call(
        "POST", "/v1/purchases", "storefront", purchase_body(order_id, amount, member_id)
    )
    assert response.status_code == 201, response.json
    assert response.json["amount"] == amount


@given(step('"{member_id:q}" redeemed {points:d} points as "{redemption_id:q}"'))
def member_redeemed_points(world: World, member_id: str, points: int, redemption_id: str) -> None:
    body = {"redemption_id": redemption_id, "points": points}
    response = world.call(
        "POST", f"/v1/members/{member_id}/redemptions", f"member {member_id}", body
    )
    assert response.status_code == 201, response.json
    assert response.json["points"] == points


@given(step('"{member_id:q}" redeemed the reward "{reward:q}" as "{redemption_id:q}"'))
def member_redeemed_reward(world: World, member_id: str, reward: str, redemption_id: str) -> None:
    body = {"redemption_id": redemption_id, "reward": reward}
    response = world.call(
        "POST", f"/v1/members/{member_id}/redemptions", f"member {member_id}", body
    )
    assert response.status_code == 201, response.json
    assert response.json["reward"] == reward


@given(step('the storefront refunded "{amount:q}" of order "{order_id:q}" as "{refund_id:q}"'))
def storefront_refunded(world: World, amount: str, order_id: str, refund_id: str) -> None:
    body = {"refund_id": refund_id, "amount": amount}
    response = world.call("POST", f"/v1/purchases/{order_id}/refunds", "storefront", body)
    assert response.status_code == 201, response.json
    assert response.json["amount"] == amount


@given(step('the storefront refunded the rest of order "{order_id:q}" as "{refund_id:q}"'))
def storefront_refunded_rest(world: World, order_id: str, refund_id: str) -> None:
    response = world.call(
        "POST", f"/v1/purchases/{order_id}/refunds", "storefront", {"refund_id": refund_id}
    )
    assert response.status_code == 201, response.json
    assert response.json["refundable_amount"] == "0.00"


@given(
    step('the storefront minted a member token for "{member_id:q}" valid for {seconds:d} seconds')
)
def storefront_minted_token(world: World, member_id: str, seconds: int) -> None:
    world.member_token(member_id, ttl_seconds=seconds)
    expected = world.clock.now() + timedelta(seconds=seconds)
    assert abs(world.tokens[member_id].expires_at - expected) < timedelta(seconds=1)


# Time and the scheduler.

TIME_PASSES = parsers.re(
    r"(?P<count>\d+) (?P<unit>days?|seconds?) pass(?:es)?(?P<scheduler> and the scheduler runs)?"
)


@given(TIME_PASSES, converters={"count": int})
@when(TIME_PASSES, converters={"count": int})
def time_passes(world: World, count: int, unit: str, scheduler: str | None) -> None:
    delta = timedelta(days=count) if unit.startswith("day") else timedelta(seconds=count)
    world.clock.advance(delta)
    if scheduler:
        world.scheduler_recorded = world.ledger.record_due()
        assert world.ledger.record_due() == 0, "a second pass at the same time recorded more"


@when("the scheduler runs again")
def scheduler_runs_again(world: World) -> None:
    world.scheduler_recorded = world.ledger.record_due()


@then("the scheduler recorded nothing")
def scheduler_recorded_nothing(world: World) -> None:
    assert world.scheduler_recorded == 0


# Purchases.


@when(step('the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" for "{member_id:q}"'))
def post_purchase(world: World, caller: str, order_id: str, amount: str, member_id: str) -> None:
    world.call("POST", "/v1/purchases", caller, purchase_body(order_id, amount, member_id))


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" for "{member_id:q}" '
        "with items:"
    )
)
def post_purchase_with_items(
    world: World,
    caller: str,
    order_id: str,
    amount: str,
    member_id: str,
    datatable: list[list[str]],
) -> None:
    header, *rows = datatable
    items = [dict(zip(header, row, strict=True)) for row in rows]
    for item in items:
        item["quantity"] = int(item["quantity"])  # type: ignore[call-overload]
    body = purchase_body(order_id, amount, member_id, items=items)
    world.call("POST", "/v1/purchases", caller, body)


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" for "{member_id:q}" '
        'under the "{policy:q}" guarantee'
    )
)
def post_purchase_with_guarantee(
    world: World, caller: str, order_id: str, amount: str, member_id: str, policy: str
) -> None:
    body = purchase_body(order_id, amount, member_id, guarantee=policy)
    world.call("POST", "/v1/purchases", caller, body)


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" for "{member_id:q}" '
        'dated "{occurred_at:q}"'
    )
)
def post_purchase_dated(
    world: World, caller: str, order_id: str, amount: str, member_id: str, occurred_at: str
) -> None:
    body = purchase_body(order_id, amount, member_id, occurred_at=occurred_at)
    world.call("POST", "/v1/purchases", caller, body)


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of "{amount:q}" in "{currency:q}" '
        'for "{member_id:q}"'
    )
)
def post_purchase_in_currency(
    world: World, caller: str, order_id: str, amount: str, currency: str, member_id: str
) -> None:
    body = purchase_body(order_id, amount, member_id) | {"currency": currency}
    world.call("POST", "/v1/purchases", caller, body)


@when(
    step(
        'the {caller:caller} posts purchase "{order_id:q}" of the JSON number {number:g} '
        'for "{member_id:q}"'
    )
)
def post_purchase_number(
    world: World, caller: str, order_id: str, number: float, member_id: str
) -> None:
    world.call("POST", "/v1/purchases", caller, purchase_body(order_id, number, member_id))


@then(step("the purchase earns {points:d} points and {bonus:d} bonus points"))
def purchase_earns(world: World, points: int, bonus: int) -> None:
    body = world.body()
    assert world.response is not None and world.response.status_code in (200, 201), body
    assert (body["points_awarded"], body["bonus_points"]) == (points, bonus), body


@then(step('purchase "{order_id:q}" shows {points:d} points awarded and {bonus:d} bonus points'))
def purchase_shows_points(world: World, order_id: str, points: int, bonus: int) -> None:
    purchase = world.purchase(order_id)
    assert (purchase["points_awarded"], purchase["bonus_points"]) == (points, bonus), purchase


@then(step('the purchase moves "{member_id:q}" up to "{tier:q}"'))
def purchase_moves_up(world: World, member_id: str, tier: str) -> None:
    body = world.body()
    assert body["member_id"] == member_id
    assert (body["tier"], body["tier_changed"]) == (tier, True), body


@then(step('the purchase leaves "{member_id:q}" at "{tier:q}"'))
def purchase_leaves(world: World, member_id: str, tier: str) -> None:
    body = world.body()
    assert body["member_id"] == member_id
    assert (body["tier"], body["tier_changed"]) == (tier, False), body


@then(
    step(
        'purchase "{order_id:q}" is dated "{occurred_at:instant}" and takes effect at '
        '"{effective_at:instant}"'
    )
)
def purchase_dates(
    world: World, order_id: str, occurred_at: datetime, effective_at: datetime
) -> None:
    purchase = world.purchase(order_id)
    assert instant(purchase["occurred_at"]) == occurred_at, purchase
    assert instant(purchase["effective_at"]) == effective_at, purchase


# Refunds.


@when(step('the {caller:caller} refunds "{amount:q}" of order "{order_id:q}" as "{refund_id:q}"'))
def refund(world: World, caller: str, amount: str, order_id: str, refund_id: str) -> None:
    body = {"refund_id": refund_id, "amount": amount}
    world.call("POST", f"/v1/purchases/{order_id}/refunds", caller, body)


@when(step('the {caller:caller} refunds the rest of order "{order_id:q}" as "{refund_id:q}"'))
def refund_rest(world: World, caller: str, order_id: str, refund_id: str) -> None:
    world.call("POST", f"/v1/purchases/{order_id}/refunds", caller, {"refund_id": refund_id})


def refund_body(world: World) -> dict[str, Any]:
    body = world.body()
    assert world.response is not None and world.response.status_code in (200, 201), body
    return body


@then(step("the refund claws back {points:d} points"))
def refund_claws_back(world: World, points: int) -> None:
    body = refund_body(world)
    assert body["points_clawed_back"] == points, body


@then(step('the refund is for "{amount:q}" and claws back {points:d} points'))
def refund_is_for(world: World, amount: str, points: int) -> None:
    body = refund_body(world)
    assert (body["amount"], body["points_clawed_back"]) == (amount, points), body


@then(step('the refund moves "{member_id:q}" down to "{tier:q}"'))
def refund_moves_down(world: World, member_id: str, tier: str) -> None:
    body = refund_body(world)
    assert (body["tier"], body["tier_changed"]) == (tier, True), body
    assert world.status(member_id)["tier"]["name"] == tier


@then(step('the refund leaves "{member_id:q}" at "{tier:q}"'))
def refund_leaves(world: World, member_id: str, tier: str) -> None:
    body = refund_body(world)
    assert (body["tier"], body["tier_changed"]) == (tier, False), body
    assert world.status(member_id)["tier"]["name"] == tier


@then(step('order "{order_id:q}" has "{amount:q}" left to refund'))
def left_to_refund(world: World, order_id: str, amount: str) -> None:
    purchase = world.purchase(order_id)
    assert purchase["refundable_amount"] == amount, purchase
    refunded = sum((Decimal(r["amount"]) for r in purchase["refunds"]), Decimal(0))
    assert Decimal(purchase["amount"]) - refunded == Decimal(amount), purchase


# Redemptions.


def redeem(world: World, caller: str, member_id: str, body: dict[str, Any]) -> None:
    world.call("POST", f"/v1/members/{member_id}/redemptions", caller, body)


@when(step('"{member_id:q}" redeems {points:d} points as "{redemption_id:q}"'))
def member_redeems_points(world: World, member_id: str, points: int, redemption_id: str) -> None:
    redeem(
        world, f"member {member_id}", member_id, {"redemption_id": redemption_id, "points": points}
    )


@when(step('"{member_id:q}" redeems the reward "{reward:q}" as "{redemption_id:q}"'))
def member_redeems_reward(world: World, member_id: str, reward: str, redemption_id: str) -> None:
    redeem(
        world, f"member {member_id}", member_id, {"redemption_id": redemption_id, "reward": reward}
    )


@when(step('"{member_id:q}" redeems nothing as "{redemption_id:q}"'))
def member_redeems_nothing(world: World, member_id: str, redemption_id: str) -> None:
    redeem(world, f"member {member_id}", member_id, {"redemption_id": redemption_id})


@when(
    step('the {caller:caller} redeems {points:d} points for "{member_id:q}" as "{redemption_id:q}"')
)
def caller_redeems_points(
    world: World, caller: str, points: int, member_id: str, redemption_id: str
) -> None:
    redeem(world, caller, member_id, {"redemption_id": redemption_id, "points": points})


@when(step('the {caller:caller} cancels redemption "{redemption_id:q}"'))
def cancel_redemption(world: World, caller: str, redemption_id: str) -> None:
    world.call("POST", f"/v1/redemptions/{redemption_id}/cancellation", caller)


@then(step("the redemption spends {points:d} points"))
def redemption_spends(world: World, points: int) -> None:
    body = world.body()
    assert world.response is not None and world.response.status_code in (200, 201), body
    assert body["points"] == points, body


# Members, tokens and the program.


@when(step('the {caller:caller} enrols "{member_id:q}" with the email "{email:q}"'))
def enrol(world: World, caller: str, member_id: str, email: str) -> None:
    world.call("POST", "/v1/members", caller, {"member_id": member_id, "email": email})


@when(step('the {caller:caller} reads the status of "{member_id:q}"'))
def read_status(world: World, caller: str, member_id: str) -> TestResponse:
    response = world.call("GET", f"/v1/members/{member_id}", caller)
    if response.status_code == 200:
        assert response.json["member_id"] == member_id
    return response


def read_events(world: World, caller: str, member_id: str) -> TestResponse:
    response = world.call("GET", f"/v1/members/{member_id}/events", caller)
    if response.status_code == 200:
        assert response.json["items"][0]["type"] == "Enrolled", response.json
    return response


def ask_each(world: World, datatable: list[list[str]], read: Any) -> None:
    header, *rows = datatable
    caller_at, status_at = header.index("caller"), header.index("expected status")
    world.answers = [(row[caller_at], int(row[status_at]), read(row[caller_at])) for row in rows]


def admitted(world: World) -> list[dict[str, Any]]:
    """The bodies the callers asked by ``ask_each`` were answered with, for those let in."""
    bodies = [
        response.get_json() for _, _, response in world.answers if response.status_code == 200
    ]
    assert bodies, "no caller was let in"
    return bodies


@when(step('these callers read the status of "{member_id:q}":'))
def callers_read_status(world: World, member_id: str, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: read_status(world, caller, member_id))


@when(step('these callers read the events of "{member_id:q}":'))
def callers_read_events(world: World, member_id: str, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: read_events(world, caller, member_id))


@when("these callers read the event log:")
def callers_read_event_log(world: World, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: world.call("GET", "/v1/events", caller))


@then("every caller who may read it finds these purchases in the event log:")
def event_log_purchases(world: World, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [(row[header.index("member")], row[header.index("order")]) for row in rows]
    for body in admitted(world):
        # API.md: every item of the log names its member.
        purchases = [e for e in body["items"] if e["type"] == "PurchaseRecorded"]
        found = [(e["member_id"], e["data"]["order_id"]) for e in purchases]
        assert found == expected, body


@when("these callers read the program:")
def callers_read_program(world: World, datatable: list[list[str]]) -> None:
    ask_each(world, datatable, lambda caller: world.call("GET", "/v1/program", caller))


@then(step("every caller who may read it finds version {version:d} in force"))
def program_version_read(world: World, version: int) -> None:
    for body in admitted(world):
        assert body["version"] == version, body


@then("each caller gets its expected status")
def each_caller_gets_expected(world: World) -> None:
    assert world.answers, "no caller was asked"
    got = [(caller, response.status_code) for caller, _, response in world.answers]
    assert got == [(caller, expected) for caller, expected, _ in world.answers]


@when(step('the {caller:caller} mints a member token for "{member_id:q}"'))
def mint_token(world: World, caller: str, member_id: str) -> None:
    world.call("POST", f"/v1/members/{member_id}/tokens", caller, {})


@then(step("the response carries a member token that expires in {hours:d} hour"))
@then(step("the response carries a member token that expires in {hours:d} hours"))
def response_carries_token(world: World, hours: int) -> None:
    body = world.body()
    assert world.response is not None and world.response.status_code == 201, body
    assert body["token"], body
    expected = world.clock.now().replace(microsecond=0) + timedelta(hours=hours)
    assert instant(body["expires_at"]) == expected, body


@then("the response carries no member token")
def response_carries_no_token(world: World) -> None:
    body = world.body()
    assert "token" not in body and "expires_at" not in body, body


@when(
    step(
        'the {caller:caller} publishes a program version in which the "{tier:q}" tier '
        'multiplies points by "{multiplier:q}"'
    )
)
def publish_program(world: World, caller: str, tier: str, multiplier: str) -> None:
    rules = world.program()["rules"]
    names = [t["name"] for t in rules["tiers"]]
    assert tier in names
    rules["tiers"][names.index(tier)]["multiplier"] = multiplier
    world.call("PUT", "/v1/program", caller, rules)


@when(
    step(
        "the {caller:caller} publishes a program version in which members are told "
        "{days:d} days before their points expire"
    )
)
def publish_expiry_notice_days(world: World, caller: str, days: int) -> None:
    rules = world.program()["rules"]
    rules["notices"]["expiry_notice_days"] = days
    world.call("PUT", "/v1/program", caller, rules)


@then(step("the program in force is version {version:d}"))
def program_version(world: World, version: int) -> None:
    assert world.program()["version"] == version


@then(step('the response shows member "{member_id:q}" with the email "{email:q}"'))
def response_shows_member(world: World, member_id: str, email: str) -> None:
    body = world.body()
    assert (body["member_id"], body["email"]) == (member_id, email), body


@then(step('"{member_id:q}" is enrolled with the email "{email:q}"'))
def is_enrolled_with(world: World, member_id: str, email: str) -> None:
    assert world.status(member_id)["email"] == email


@then(step('"{member_id:q}" is not enrolled'))
def is_not_enrolled(world: World, member_id: str) -> None:
    response = world.client.get(
        f"/v1/members/{member_id}",
        headers={"Authorization": f"Bearer {world.api_keys['storefront']}"},
    )
    assert response.status_code == 404, response.json


# Responses.


@then(step("the response status is {status:d}"))
def response_status(world: World, status: int) -> None:
    assert world.response is not None
    assert world.response.status_code == status, world.response.get_json()


@then(step('the response status is {status:d} and the problem names the field "{name:q}"'))
def response_problem(world: World, status: int, name: str) -> None:
    assert world.response is not None
    assert world.response.status_code == status, world.response.get_json()
    assert name in problem_fields(world), world.body()


@then("the response is the same as the first one")
def same_as_first(world: World) -> None:
    first = world.first_of_last
    assert world.response is not None and first is not None, "the request carried no id"
    assert first is not world.response, "this was the first request with its id"
    assert first.status_code == 201, first.get_json()
    repeat, original = world.response.get_json(), first.get_json()
    # The position of a repeat is the log's head then: at or after the first one's.
    assert repeat.pop("position") >= original.pop("position")
    assert repeat == original


# Points.


@given(step('"{member_id:q}" has {available:d} available points and {pending:d} pending'))
@then(step('"{member_id:q}" has {available:d} available points and {pending:d} pending'))
def has_points(world: World, member_id: str, available: int, pending: int) -> None:
    points = world.status(member_id)["points"]
    assert (points["available"], points["pending"]) == (available, pending), points
    assert sum(lot["points"] for lot in points["pending_lots"]) == pending, points


@then(step('"{member_id:q}" has {count:d} expired points'))
def has_expired(world: World, member_id: str, count: int) -> None:
    assert world.status(member_id)["points"]["expired"] == count


@then(step('"{member_id:q}" has {count:d} points redeemed'))
def has_redeemed(world: World, member_id: str, count: int) -> None:
    assert world.status(member_id)["points"]["redeemed"] == count


@then(step('"{member_id:q}" has {count:d} points clawed back'))
def has_clawed_back(world: World, member_id: str, count: int) -> None:
    assert world.status(member_id)["points"]["clawed_back"] == count


@then(step('"{member_id:q}" has a pending lot of {points:d} points available at "{when:instant}"'))
def has_pending_lot(world: World, member_id: str, points: int, when: datetime) -> None:
    lots = world.status(member_id)["points"]["pending_lots"]
    found = [(lot["points"], instant(lot["available_at"])) for lot in lots]
    assert (points, when) in found, lots


@then(step('"{member_id:q}" has these pending lots:'))
def has_pending_lots(world: World, member_id: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [
        (int(r[header.index("points")]), instant(r[header.index("available_at")])) for r in rows
    ]
    lots = world.status(member_id)["points"]["pending_lots"]
    assert [(lot["points"], instant(lot["available_at"])) for lot in lots] == expected, lots


# Tiers.


@given(step('"{member_id:q}" holds the "{tier:q}" tier'))
@then(step('"{member_id:q}" holds the "{tier:q}" tier'))
def holds_tier(world: World, member_id: str, tier: str) -> None:
    assert world.status(member_id)["tier"]["name"] == tier


@then(step('"{member_id:q}" holds the "{tier:q}" tier with a qualifying spend of "{spend:q}"'))
def holds_tier_with_spend(world: World, member_id: str, tier: str, spend: str) -> None:
    status = world.status(member_id)["tier"]
    assert (status["name"], status["qualifying_spend"]) == (tier, spend), status


@then(step('"{member_id:q}" needs "{amount:q}" more for "{tier:q}"'))
def needs_for_next(world: World, member_id: str, amount: str, tier: str) -> None:
    status = world.status(member_id)["tier"]
    assert status["next"] == {"name": tier, "spend_needed": amount}, status


@then(step('"{member_id:q}" holds the top tier'))
def holds_top_tier(world: World, member_id: str) -> None:
    status = world.status(member_id)["tier"]
    top = world.program()["rules"]["tiers"][-1]["name"]
    assert (status["name"], status["next"]) == (top, None), status


@then(step('"{member_id:q}" needs "{amount:q}" to keep the tier at the review on "{when:instant}"'))
def needs_to_keep(world: World, member_id: str, amount: str, when: datetime) -> None:
    status = world.status(member_id)["tier"]
    assert status["spend_to_keep"] == amount, status
    assert instant(status["review_at"]) == when, status


@then(step('"{member_id:q}" has a tier review on "{when:instant}"'))
def has_review(world: World, member_id: str, when: datetime) -> None:
    status = world.status(member_id)["tier"]
    assert status["review_at"] is not None and instant(status["review_at"]) == when, status


@then(step('"{member_id:q}" has no tier review'))
def has_no_review(world: World, member_id: str) -> None:
    status = world.status(member_id)["tier"]
    assert status["review_at"] is None, status
    assert status["spend_to_keep"] == "0.00", status


# The ledger's events.


@then(step('the ledger recorded {count:d} "{kind:q}" event for "{member_id:q}"'))
@then(step('the ledger recorded {count:d} "{kind:q}" events for "{member_id:q}"'))
def recorded_count(world: World, count: int, kind: str, member_id: str) -> None:
    kinds = [event["type"] for event in world.events(member_id)]
    assert kinds.count(kind) == count, kinds


@then(step('the ledger recorded a "{kind:q}" event for "{member_id:q}" with reason "{reason:q}"'))
def recorded_with_reason(world: World, kind: str, member_id: str, reason: str) -> None:
    found = [e for e in world.events(member_id) if e["type"] == kind]
    assert [e["data"].get("reason") for e in found] == [reason], found


@then(step('the ledger recorded "{earlier:q}" before "{later:q}" for "{member_id:q}"'))
def recorded_in_order(world: World, earlier: str, later: str, member_id: str) -> None:
    kinds = [event["type"] for event in world.events(member_id)]
    assert earlier in kinds and later in kinds, kinds
    assert kinds.index(earlier) < kinds.index(later), kinds


@then(
    step(
        '"{member_id:q}" was told on "{at:q}" that {points:d} points of the "{order_id:q}" lot '
        'expire at "{expires_at:q}"'
    )
)
def told_points_expire(
    world: World, member_id: str, at: str, points: int, order_id: str, expires_at: str
) -> None:
    told = [
        (instant(e["occurred_at"]), e["data"]["points"], e["data"]["lot"], e["data"]["expires_at"])
        for e in world.events(member_id)
        if e["type"] == "PointsExpiring"
    ]
    assert told == [(instant(at), points, f"purchase:{order_id}", expires_at)], told


@then(
    step(
        '"{member_id:q}" was told on "{at:q}" that the "{policy:q}" guarantee of order '
        '"{order_id:q}" closes at "{closes_at:q}"'
    )
)
def told_guarantee_closes(
    world: World, member_id: str, at: str, policy: str, order_id: str, closes_at: str
) -> None:
    told = [
        (instant(e["occurred_at"]), e["data"]["policy"], e["data"]["order_id"])
        + (e["data"]["closes_at"],)
        for e in world.events(member_id)
        if e["type"] == "GuaranteeExpiring"
    ]
    assert told == [(instant(at), policy, order_id, closes_at)], told


@then(step('the ledger recorded these changes for "{member_id:q}", in this order:'))
def recorded_changes(world: World, member_id: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    kind_at, when_at = header.index("change"), header.index("at")
    expected = [(row[kind_at], instant(row[when_at])) for row in rows]
    kinds = {kind for kind, _ in expected}
    found = [
        (event["type"], instant(event["occurred_at"]))
        for event in world.events(member_id)
        if event["type"] in kinds
    ]
    assert found == expected, found


# Referrals.

REFERRAL_STEPS = {
    # step of a referral -> (the referrer's event, the referee's event or None)
    "registered": ("ReferralRegistered", "ReferredBy"),
    "qualified": ("ReferralQualified", "RefereeRewardPending"),
    "rewarded": ("ReferralRewarded", None),
    "voided": ("ReferralVoided", "RefereeRewardVoided"),
    "capped": ("ReferralCapped", "RefereeReferralCapped"),
}
REFERRAL_DATES = {
    "qualified": "qualified_at",
    "rewarded": "rewarded_at",
    "voided": "voided_at",
    "capped": "capped_at",
}
# The dates a referral in each state has (registered_at always).
DATES_BY_STATE = {
    "registered": set(),
    "qualified": {"qualified_at"},
    "rewarded": {"qualified_at", "rewarded_at"},
    "voided": {"qualified_at", "voided_at"},
    "capped": {"capped_at"},
}


def referral_code_of(world: World, member_id: str) -> str:
    code: str = world.status(member_id)["referral_code"]
    assert len(code) == 8, code
    return code


def enrol_with_code(world: World, caller: str, member_id: str, email: str, code: str) -> None:
    body = {"member_id": member_id, "email": email, "referral_code": code}
    response = world.call("POST", "/v1/members", caller, body)
    if response.status_code in (200, 201):
        assert response.json["member_id"] == member_id, response.json
        assert response.json["referral_code"] != code, "a member gets a code of its own"


def check_referral(item: dict[str, Any]) -> None:
    """What every listed referral must say about itself, whatever its state."""
    state = item["state"]
    assert state in DATES_BY_STATE, item
    assert item["registered_at"] is not None, item
    for date in REFERRAL_DATES.values():
        assert (item[date] is not None) == (date in DATES_BY_STATE[state]), (date, item)
    rewarded = state in ("qualified", "rewarded")
    assert (item["qualifying_order_id"] is not None) == (state != "registered"), item
    assert (item["reward_available_at"] is not None) == ("qualified_at" in DATES_BY_STATE[state])
    expected = (
        (item["terms"]["referrer_points"], item["terms"]["referee_points"]) if rewarded else (0, 0)
    )
    assert (item["referrer_points"], item["referee_points"]) == expected, item
    if state == "rewarded":
        assert item["rewarded_at"] == item["reward_available_at"], item


def referrals_of(world: World, member_id: str, limit: int = 1000) -> list[list[dict[str, Any]]]:
    """The member's referrals, page by page, as a storefront reads them."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = world.client.get(
            f"/v1/members/{member_id}/referrals{query}",
            headers={"Authorization": f"Bearer {world.api_keys['storefront']}"},
        )
        assert response.status_code == 200, response.json
        items: list[dict[str, Any]] = response.json["items"]
        assert len(items) <= limit
        for item in items:
            assert item["referrer_id"] == member_id, item
            check_referral(item)
        pages.append(items)
        cursor = response.json["next"]
        if not cursor:
            return pages


def referral(world: World, referrer_id: str, referee_id: str) -> dict[str, Any]:
    pages = referrals_of(world, referrer_id)
    found = [item for page in pages for item in page if item["referee_id"] == referee_id]
    assert len(found) == 1, pages
    return found[0]


@given(step('"{member_id:q}" enrolled with the referral code of "{referrer_id:q}"'))
def enrolled_with_code_of(world: World, member_id: str, referrer_id: str) -> None:
    code = referral_code_of(world, referrer_id)
    enrol_with_code(world, "storefront", member_id, f"{member_id}@example.com", code)
    assert world.response is not None and world.response.status_code == 201, world.body()
    assert referral(world, referrer_id, member_id)["state"] == "registered"


@when(
    step(
        'the {caller:caller} enrols "{member_id:q}" with the email "{email:q}" and the referral '
        'code of "{referrer_id:q}"'
    )
)
def enrol_with_code_of(
    world: World, caller: str, member_id: str, email: str, referrer_id: str
) -> None:
    enrol_with_code(world, caller, member_id, email, referral_code_of(world, referrer_id))


@when(
    step(
        'the {caller:caller} enrols "{member_id:q}" with the email "{email:q}" and the referral '
        'code "{code:q}"'
    )
)
def enrol_with_literal_code(
    world: World, caller: str, member_id: str, email: str, code: str
) -> None:
    enrol_with_code(world, caller, member_id, email, code)


@given(
    step(
        '{count:d} friends of "{referrer_id:q}" enrolled with her referral code and each bought '
        '"{amount:q}"'
    )
)
def friends_enrolled_and_bought(world: World, count: int, referrer_id: str, amount: str) -> None:
    code = referral_code_of(world, referrer_id)
    for n in range(1, count + 1):
        friend = f"friend-{n:02d}"
        enrol_with_code(world, "storefront", friend, f"{friend}@example.com", code)
        assert world.response is not None and world.response.status_code == 201, world.body()
        body = purchase_body(f"F-{n:02d}", amount, friend)
        response = world.call("POST", "/v1/purchases", "storefront", body)
        assert response.status_code == 201, response.json
    (page,) = referrals_of(world, referrer_id)
    assert [item["referee_id"] for item in page] == [f"friend-{n:02d}" for n in range(1, count + 1)]


@then(step('"{referrer_id:q}" has a "{state:q}" referral of "{referee_id:q}"'))
def has_referral(world: World, referrer_id: str, state: str, referee_id: str) -> None:
    assert referral(world, referrer_id, referee_id)["state"] == state


@then(step('"{referrer_id:q}" has {count:d} "{state:q}" referral'))
@then(step('"{referrer_id:q}" has {count:d} "{state:q}" referrals'))
def has_referrals_in_state(world: World, referrer_id: str, count: int, state: str) -> None:
    items = [item for page in referrals_of(world, referrer_id) for item in page]
    assert [item["state"] for item in items].count(state) == count, items


@then(step('"{member_id:q}" has no referrals'))
def has_no_referrals(world: World, member_id: str) -> None:
    assert referrals_of(world, member_id) == [[]]
    assert "ReferralRegistered" not in [event["type"] for event in world.events(member_id)]


@then(step('the referrals of "{referrer_id:q}" are:'))
def referrals_are(world: World, referrer_id: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [dict(zip(header, row, strict=True)) for row in rows]
    items = [item for page in referrals_of(world, referrer_id) for item in page]
    found = [
        {
            "referee": item["referee_id"],
            "state": item["state"],
            "qualifying order": item["qualifying_order_id"] or "",
            "referrer points": str(item["referrer_points"]),
            "referee points": str(item["referee_points"]),
            "reward available at": item["reward_available_at"] or "",
        }
        for item in items
    ]
    for row in expected:
        if row["reward available at"]:
            row["reward available at"] = instant(row["reward available at"]).isoformat()
    assert found == expected, items


@then(
    step(
        'reading the referrals of "{referrer_id:q}" {size:d} at a time gives {count:d} pages, '
        "in the order the friends enrolled"
    )
)
def referrals_paged(world: World, referrer_id: str, size: int, count: int) -> None:
    pages = referrals_of(world, referrer_id, limit=size)
    assert len(pages) == count, pages
    assert all(len(page) == size for page in pages[:-1]), pages
    assert 0 < len(pages[-1]) <= size, pages
    (whole,) = referrals_of(world, referrer_id)
    assert [item for page in pages for item in page] == whole
    registered = [
        event["data"]["referee_id"]
        for event in world.events(referrer_id)
        if event["type"] == "ReferralRegistered"
    ]
    assert [item["referee_id"] for item in whole] == registered


REQUEST_CAUSES: tuple[tuple[str, Callable[[Any], tuple[str, str, str]]], ...] = (
    ('the enrolment of "{member_id}"', lambda found: ("POST", "/v1/members", found["member_id"])),
    ('purchase "{order_id}"', lambda found: ("POST", "/v1/purchases", found["order_id"])),
    (
        'refund "{refund_id}" of "{order_id}"',
        lambda found: ("POST", f"/v1/purchases/{found['order_id']}/refunds", found["refund_id"]),
    ),
)


def expected_cause(world: World, text: str) -> str:
    """The cause an event records: the id of the request that made it, or the scheduler run."""
    for pattern, request_key in REQUEST_CAUSES:
        found = parse.parse(pattern, text)
        if found is not None:
            response = world.first[request_key(found)]
            assert response.status_code == 201, response.get_json()
            request_id: str = response.headers["X-Request-Id"]
            assert request_id
            return request_id
    run = parse.parse("the scheduler run at {moment}", text)
    assert run is not None, f"no cause reads {text!r}"
    return f"scheduler:{instant(run['moment']).isoformat()}"


@then(step('the referral of "{referee_id:q}" by "{referrer_id:q}" records these causes:'))
def referral_causes(
    world: World, referee_id: str, referrer_id: str, datatable: list[list[str]]
) -> None:
    """The referral's causes, and the same cause on its events in both members' ledgers."""
    header, *rows = datatable
    described = {row[header.index("step")]: row[header.index("cause")] for row in rows}
    expected = {name: expected_cause(world, text) for name, text in described.items()}
    made = referral(world, referrer_id, referee_id)
    assert made["causes"] == expected, made
    referrer_events = world.events(referrer_id)
    referee_events = world.events(referee_id)
    for name, cause in expected.items():
        referrer_kind, referee_kind = REFERRAL_STEPS[name]
        (mine,) = [
            e for e in referrer_events
            if e["type"] == referrer_kind and e["data"]["referee_id"] == referee_id
        ]  # fmt: skip
        assert mine["data"]["cause"] == cause, mine
        if referee_kind is not None:
            (theirs,) = [e for e in referee_events if e["type"] == referee_kind]
            assert (theirs["data"]["cause"], theirs["data"]["referrer_id"]) == (
                cause,
                referrer_id,
            ), theirs
        if name in ("qualified", "capped"):
            assert mine["data"]["order_id"] == made["qualifying_order_id"], mine
        if name == "voided":
            refund = parse.parse('refund "{refund_id}" of "{order_id}"', described[name])
            assert refund is not None and refund["order_id"] == made["qualifying_order_id"]
            assert mine["data"]["refund_id"] == refund["refund_id"], mine


@then(step("the refund claws back {points:d} point"))
def refund_claws_back_one(world: World, points: int) -> None:
    refund_claws_back(world, points)


@then("the program in force has these referral rules:")
def program_referral_rules(world: World, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    (row,) = rows
    expected = dict(zip(header, row, strict=True))
    found = world.program()["rules"]["referrals"]
    assert {key: str(value) for key, value in found.items()} == expected, found


@when(
    step(
        "the {caller:caller} publishes a program version in which a referrer earns "
        "{referrer_points:d} points and a referee {referee_points:d} for a first purchase of "
        '"{amount:q}"'
    )
)
def publish_referral_terms(
    world: World, caller: str, referrer_points: int, referee_points: int, amount: str
) -> None:
    rules = world.program()["rules"]
    rules["referrals"].update(
        referrer_points=referrer_points, referee_points=referee_points, qualifying_amount=amount
    )
    world.call("PUT", "/v1/program", caller, rules)


@when(step('these callers read the referrals of "{member_id:q}":'))
def callers_read_referrals(world: World, member_id: str, datatable: list[list[str]]) -> None:
    path = f"/v1/members/{member_id}/referrals"
    ask_each(world, datatable, lambda caller: world.call("GET", path, caller))


@then("every caller who may read them finds these referrals:")
def referrals_read(world: World, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [(row[header.index("referee")], row[header.index("state")]) for row in rows]
    for body in admitted(world):
        found = [(item["referee_id"], item["state"]) for item in body["items"]]
        assert found == expected, body
