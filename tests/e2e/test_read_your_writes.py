"""Reads see every acknowledged write, whichever process took it (PROGRAM.md): one server
writes, another one on the same database reads from its views, which no worker is keeping up,
and never shows the member as it was before the write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.keys import KEY_ROLES
from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.settings import Settings
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.app import create_app
from api.bootstrap import bootstrap
from api.reads import READ_FROM_HEADER
from domain.clock import FixedClock
from tests.e2e.conftest import START, Server


@pytest.fixture
def two_servers(database_url: str) -> Iterator[tuple[Server, Server, MemberStatusView]]:
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    opened: list[Any] = []
    servers = []
    views = None
    try:
        for with_views in (False, True):
            ledger, keys, secret = bootstrap(settings, clock=clock)
            opened += [ledger, keys]
            if with_views:
                views = open_member_status_view(ledger.env)
                opened.append(views)
            app = create_app(ledger, keys, token_secret=secret, clock=clock, views=views)
            api_keys = {role: keys.create(role, f"e2e {role} {with_views}") for role in KEY_ROLES}
            servers.append(Server(app, app.test_client(), clock, ledger, keys, secret, api_keys))
        assert views is not None
        yield servers[0], servers[1], views
    finally:
        for thing in reversed(opened):
            thing.close()


def read(server: Server, path: str) -> tuple[str, Any]:
    response = server.call("GET", path, "storefront")
    assert response.status_code == 200, response.json
    return response.headers.get(READ_FROM_HEADER, ""), response.json


def project(reader: Server, views: MemberStatusView) -> None:
    ProjectionWorker(
        reader.ledger, MemberStatusProjection(views, reader.ledger, representations)
    ).catch_up()


def test_every_kind_of_write_is_read_at_once_by_another_server(
    two_servers: tuple[Server, Server, MemberStatusView],
) -> None:
    writer, reader, views = two_servers
    writer.enrol("ann")
    project(reader, views)
    assert read(reader, "/v1/members/ann")[0] == "view"  # current: the view answers

    writer.purchase("A-1", "ann", "200.00")
    source, status = read(reader, "/v1/members/ann")
    assert (source, status["points"]["pending"]) == ("ledger", 200)
    source, bought = read(reader, "/v1/purchases/A-1")
    assert bought["points_awarded"] == 200

    refunded = writer.call(
        "POST", "/v1/purchases/A-1/refunds", "storefront", {"refund_id": "R-1", "amount": "50.00"}
    )
    assert refunded.status_code == 201, refunded.json
    project(reader, views)
    writer.purchase("A-2", "ann", "10.00")  # the view is behind again for ann
    assert read(reader, "/v1/members/ann")[1]["points"]["pending"] == 160
    assert read(reader, "/v1/purchases/A-1")[1]["refunded_amount"] == "50.00"

    code = read(reader, "/v1/members/ann")[1]["referral_code"]
    body = {"member_id": "bob", "email": "bob@example.com", "referral_code": code}
    assert writer.call("POST", "/v1/members", "storefront", body).status_code == 201
    source, made = read(reader, "/v1/members/ann/referrals")
    assert source == "ledger" and [r["referee_id"] for r in made["items"]] == ["bob"]

    project(reader, views)
    for path in ("/v1/members/ann", "/v1/purchases/A-1", "/v1/members/ann/referrals"):
        source, from_view = read(reader, path)
        assert source == "view", path
        assert from_view == read(writer, path)[1], path
