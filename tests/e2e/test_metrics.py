"""The ledger's figures in ``/metrics``: events appended, projection lag and analytics age, read
from the database at scrape time, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.keys import KEY_ROLES
from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.settings import Settings
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.app import create_app
from api.bootstrap import bootstrap
from domain.clock import FixedClock
from tests.e2e.conftest import START, Server
from tests.scrapes import names, value


@pytest.fixture
def reader(database_url: str) -> Iterator[tuple[Server, MemberStatusView]]:
    """The app reading from the views, with no projection running: the tests move them."""
    clock = FixedClock(START)
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, secret = bootstrap(settings, clock=clock)
    views = open_member_status_view(ledger.env)
    try:
        app = create_app(ledger, keys, token_secret=secret, clock=clock, views=views)
        api_keys = {role: keys.create(role, f"e2e {role}") for role in KEY_ROLES}
        yield Server(app, app.test_client(), clock, ledger, keys, secret, api_keys), views
    finally:
        views.close()
        ledger.close()
        keys.close()


def scrape(server: Server) -> str:
    response = server.client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def project(server: Server, views: MemberStatusView) -> None:
    worker = ProjectionWorker(
        server.ledger, MemberStatusProjection(views, server.ledger, representations)
    )
    worker.catch_up()


def test_projection_lag_and_analytics_age_follow_the_log_and_the_read_models(
    reader: tuple[Server, MemberStatusView],
) -> None:
    server, views = reader
    server.enrol("ann")
    server.purchase("A-1", "ann")
    head = server.ledger.recorder.max_notification_id()
    assert head is not None and head >= 3
    server.clock.advance(timedelta(seconds=90))

    text = scrape(server)  # nothing projected yet
    assert value(text, "daifuku_ledger_events_appended_total") == head
    assert value(text, "daifuku_read_models_position") == 0
    assert value(text, "daifuku_projection_lag_events") == head
    assert value(text, "daifuku_projection_lag_seconds") == 90
    assert "daifuku_analytics_age_seconds" not in names(text)  # they have applied nothing
    assert value(text, "daifuku_ledger_figures_up") == 1

    project(server, views)
    text = scrape(server)
    assert value(text, "daifuku_read_models_position") == head
    assert value(text, "daifuku_projection_lag_events") == 0
    assert value(text, "daifuku_projection_lag_seconds") == 0
    assert value(text, "daifuku_analytics_age_seconds") == 90  # the last event, 90 s ago

    server.purchase("A-2", "ann")  # recorded now, and not projected
    server.clock.advance(timedelta(seconds=30))
    text = scrape(server)
    new_head = server.ledger.recorder.max_notification_id()
    assert new_head is not None and new_head > head
    assert value(text, "daifuku_ledger_events_appended_total") == new_head
    assert value(text, "daifuku_projection_lag_events") == new_head - head
    assert value(text, "daifuku_projection_lag_seconds") == 30
    assert value(text, "daifuku_analytics_age_seconds") == 120


def test_a_read_model_figure_that_cannot_be_read_is_left_out_and_the_scrape_answers(
    reader: tuple[Server, MemberStatusView], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, views = reader
    server.enrol("ann")

    def unreachable(_name: str) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(views, "max_tracking_id", unreachable)
    text = scrape(server)
    assert value(text, "daifuku_ledger_figures_up") == 0
    assert value(text, "daifuku_ledger_events_appended_total") == (
        server.ledger.recorder.max_notification_id()
    )
    assert names(text).isdisjoint({"daifuku_read_models_position", "daifuku_projection_lag_events"})
    assert value(text, "daifuku_http_requests_in_flight") == 1
