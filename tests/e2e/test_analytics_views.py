"""The analytics kept by the read models: totals updated by every write (and by the worker's
time-driven refresh) equal what the ledger folds and what a replay from scratch recomputes,
and the value page ranked by the database is the one the ledger ranks, page by page."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.projections import MemberStatusProjection, ProjectionWorker, replay
from adapters.settings import Database
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.reads import READ_FROM_HEADER
from domain.program import ProgramRules
from tests.e2e.conftest import Server
from tests.e2e.test_read_models import busy_history, reader

__all__ = ["reader"]  # the fixture


def worker(server: Server, views: MemberStatusView) -> ProjectionWorker:
    return ProjectionWorker(
        server.ledger, MemberStatusProjection(views, server.ledger, representations)
    )


def summary(server: Server) -> tuple[str, dict[str, Any]]:
    response = server.call("GET", "/v1/analytics/summary", "auditor")
    assert response.status_code == 200, response.json
    return response.headers[READ_FROM_HEADER], dict(response.json or {})


def from_ledger(server: Server, views: MemberStatusView, path: str) -> Any:
    """``path`` answered with the views switched off: the ledger folds every member."""
    extension = server.app.extensions["daifuku"]
    server.app.extensions["daifuku"] = replace(extension, views=None)
    try:
        response = server.call("GET", path, "auditor")
    finally:
        server.app.extensions["daifuku"] = extension
    assert response.headers[READ_FROM_HEADER] == "ledger"
    return response.json


def recomputed(server: Server) -> dict[str, int]:
    """The totals of views rebuilt from the first event into a scratch file, refreshed now."""
    with tempfile.TemporaryDirectory(prefix="daifuku-totals-") as scratch_dir:
        database = Database(kind="sqlite", path=str(Path(scratch_dir) / "scratch.db"))
        scratch = open_member_status_view(database.event_store_env())
        try:
            replay(server.ledger, scratch, representations)
            worker(server, scratch).refresh()
            return scratch.totals()
        finally:
            scratch.close()


def assert_consistent(server: Server, views: MemberStatusView) -> dict[str, Any]:
    """After the worker caught up and refreshed: totals = the rows' figures summed = a replay's
    totals, and the summary and the value pages are the ledger's."""
    work = worker(server, views)
    work.catch_up()
    work.refresh()
    totals = views.totals()
    summed: Counter[str] = Counter()
    for row in views.all():
        summed.update(row.figures)
    assert totals == {key: count for key, count in summed.items() if count}
    assert totals == recomputed(server)
    source, found = summary(server)
    assert source == "view" and found["refresh_pending"] == 0
    expected = from_ledger(server, views, "/v1/analytics/summary")
    assert found == {**expected, "position": found["position"], "refresh_pending": 0}
    for value_class in (None, "A", "B", "C", "D"):
        for limit in (1, 3, 100):
            assert_same_pages(server, views, value_class, limit)
    return found


def assert_same_pages(
    server: Server, views: MemberStatusView, value_class: str | None, limit: int
) -> None:
    path = f"/v1/analytics/members?limit={limit}" + (f"&class={value_class}" if value_class else "")
    query = path
    while True:
        response = server.call("GET", query, "auditor")
        assert response.status_code == 200, response.json
        assert response.headers[READ_FROM_HEADER] == "view"
        assert response.json == from_ledger(server, views, query), query
        cursor = response.json["next"]
        if cursor is None:
            break
        query = f"{path}&cursor={cursor}"


def test_every_kind_of_change_keeps_the_totals_exact(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    busy_history(server)  # referrals, guarantees, a claim, a refund, a redemption, 40 days
    for member_id in ("eve", "fay"):  # a tie on net contribution
        server.enrol(member_id)
        server.purchase(f"T-{member_id}", member_id, "120.00")
    assert_consistent(server, views)

    server.clock.advance(timedelta(days=31))  # lots mature, with no event recorded yet
    work = worker(server, views)
    work.catch_up()
    _, stale = summary(server)
    assert stale["refresh_pending"] > 0  # the eve and fay lots: time alone changed them
    found = assert_consistent(server, views)
    assert found["points_outstanding"]["pending"] == 0

    server.ledger.record_due()  # the same changes recorded as events: the totals do not move
    assert assert_consistent(server, views)["points_outstanding"] == found["points_outstanding"]

    server.clock.advance(timedelta(days=200))  # past 180 days without a purchase: dormant
    found = assert_consistent(server, views)
    assert found["members"]["by_stage"]["dormant"] >= 5

    # A new program version changes every member's figures (the point value in the nets).
    rules = replace(ProgramRules(), point_value=ProgramRules().point_value * 3)
    server.ledger.publish_program(rules, "test")
    assert_consistent(server, views)

    server.clock.advance(timedelta(days=400))  # lost, and lots expire
    found = assert_consistent(server, views)
    assert found["members"]["by_stage"]["lost"] >= 5


def test_a_guarantee_window_closing_is_refreshed(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("gus")
    body = {"order_id": "W-1", "member_id": "gus", "amount": "90.00", "currency": "USD",
            "guarantee": "satisfaction"}  # fmt: skip
    assert server.call("POST", "/v1/purchases", "storefront", body).status_code == 201
    found = assert_consistent(server, views)
    assert found["guarantees"]["open"] == 1
    server.clock.advance(timedelta(days=400))
    found = assert_consistent(server, views)
    assert (found["guarantees"]["open"], found["guarantees"]["max_payout"]) == (0, "0.00")


def test_the_value_pages_rank_like_the_ledger_with_ties_and_losses(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    rng = random.Random(13)
    amounts = ["20.00", "45.50", "45.50", "120.00", "300.00"]
    for n in range(30):
        member_id = f"m{n:02d}"
        server.enrol(member_id)
        purchases = rng.choice([0, 1, 1, 2, 3])
        for k in range(purchases):
            server.purchase(f"{member_id}-{k}", member_id, rng.choice(amounts))
            server.clock.advance(timedelta(hours=rng.choice([1, 13, 30])))
        if purchases and rng.random() < 0.3:
            refund = {"refund_id": f"r-{member_id}", "amount": "10.00"}
            path = f"/v1/purchases/{member_id}-0/refunds"
            assert server.call("POST", path, "storefront", refund).status_code == 201
        if rng.random() < 0.2:  # a claim pays out more than was bought: a loss, class D
            body = {"order_id": f"{member_id}-g", "member_id": member_id, "amount": "60.00",
                    "currency": "USD", "guarantee": "satisfaction"}  # fmt: skip
            assert server.call("POST", "/v1/purchases", "storefront", body).status_code == 201
            path = f"/v1/purchases/{member_id}-g/guarantee-claims"
            claim = {"claim_id": f"c-{member_id}"}
            assert server.call("POST", path, "storefront", claim).status_code == 201
    server.clock.advance(timedelta(days=3))
    assert_consistent(server, views)
