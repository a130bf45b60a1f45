"""The bench's anchors: the ceiling app, the eventsourcing peer, the scale phase's arithmetic and
the report's targets and information."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest
from eventsourcing.persistence import RecordConflictError

from bench.ceiling_app import create_app
from bench.clients import purchase_body
from bench.peer import Customer, Shop, postgres_env, writer_split
from bench.report import (
    INFO,
    SKIPPED_ONE_SIZE,
    SKIPPED_SCALE,
    anchor_ratios,
    passed,
    skipped_targets,
    verdicts,
)
from bench.run import parse_args
from bench.scale import parse_sizes, planned_calls, read_figures, scale_ratios

BEARER = {"Authorization": "Bearer any"}
POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@pytest.mark.parametrize("path", ["/v1/purchases", "/v1/schema/purchases"])
def test_ceiling_answers_a_purchase_body_as_the_api_would(path: str) -> None:
    client = create_app().test_client()
    body = purchase_body("o-1", "m-1", random.Random(7))
    answer = client.post(path, json=body, headers=BEARER)
    assert answer.status_code == 201
    assert answer.get_json() == {
        "order_id": "o-1",
        "member_id": "m-1",
        "amount": body["amount"],
        "points_awarded": int(float(body["amount"])),
    }
    assert client.post(path, json=body).status_code == 401
    assert client.post(path, json={**body, "amount": "lots"}, headers=BEARER).status_code == 422
    assert client.post(path, data="[", headers=BEARER).status_code in (400, 422)


def test_ceiling_answers_the_status_reader_and_the_health_check() -> None:
    client = create_app().test_client()
    assert client.get("/v1/members/m-1", headers=BEARER).get_json()["member_id"] == "m-1"
    assert client.get("/v1/members/m-1").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_peer_purchase_is_one_event_on_the_customer() -> None:
    app = Shop(env=POPO)  # the library's in-memory store: the same code as on PostgreSQL
    (customer_id,) = app.enrol("m-1")
    assert customer_id == Customer.create_id("m-1")
    before = app.recorder.max_notification_id() or 0
    assert app.record_purchase(customer_id, "o-1", "12.50") == 0
    assert (app.recorder.max_notification_id() or 0) == before + 1
    customer = app.repository.get(customer_id)
    assert (customer.points, customer.purchases, customer.version) == (12, 1, 2)


def test_peer_retries_a_conflict_with_another_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Shop(env=POPO)
    (customer_id,) = app.enrol("m-1")
    stale = app.repository.get(customer_id)
    app.record_purchase(customer_id, "o-1", "10.00")  # another writer, after our read
    real_get = app.repository.get
    copies = iter([stale])
    monkeypatch.setattr(app.repository, "get", lambda i: next(copies, None) or real_get(i))
    assert app.record_purchase(customer_id, "o-2", "5.00") == 1
    customer = real_get(customer_id)
    assert (customer.points, customer.purchases) == (15, 2)


def test_peer_gives_up_after_its_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Shop(env=POPO)
    (customer_id,) = app.enrol("m-1")
    stale = app.repository.get(customer_id)
    app.record_purchase(customer_id, "o-1", "10.00")
    # every read returns the version from before the other writer's purchase
    monkeypatch.setattr(app.repository, "get", lambda _i: copy.deepcopy(stale))
    with pytest.raises(RecordConflictError):
        app.record_purchase(customer_id, "o-2", "5.00")


def test_peer_settings_come_from_the_bench_url() -> None:
    env = postgres_env("postgresql://bench:s%40cret@127.0.0.1:5433/daifuku_bench_ab", 4)
    assert env == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "daifuku_bench_ab",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5433",
        "POSTGRES_USER": "bench",
        "POSTGRES_PASSWORD": "s@cret",
        "POSTGRES_POOL_SIZE": "4",
    }
    assert postgres_env("postgresql://postgres@127.0.0.1/x", 1)["POSTGRES_PASSWORD"] == ""


@pytest.mark.parametrize(
    ("writers", "processes", "split"),
    [(8, 2, [4, 4]), (7, 2, [4, 3]), (3, 4, [1, 1, 1]), (1, 1, [1])],
)
def test_peer_writers_are_spread_like_gunicorn_threads(
    writers: int, processes: int, split: list[int]
) -> None:
    assert writer_split(writers, processes) == split


def test_scale_sizes_parse_ascending_and_distinct() -> None:
    assert parse_sizes("100000,10_000,10000") == [10_000, 100_000]
    for bad in ("", "ten", "0,5", "5,-1"):
        with pytest.raises(ValueError, match="member count"):
            parse_sizes(bad)
    assert parse_args([]).scale_members == [10_000, 100_000]
    assert parse_args(["--scale-members", "1000,5000"]).scale_members == [1000, 5000]
    with pytest.raises(SystemExit):
        parse_args(["--scale-members", "many"])


@pytest.mark.parametrize(
    ("first", "wanted", "budget", "calls"),
    [(0.01, 20, 60, 20), (5.0, 20, 60, 12), (25.0, 20, 60, 3), (0.0, 20, 60, 20), (9.0, 2, 1, 2)],
)
def test_scale_calls_fit_the_budget_but_never_fewer_than_three(
    first: float, wanted: int, budget: float, calls: int
) -> None:
    assert planned_calls(first, wanted, budget) == calls


def test_scale_read_figures_count_a_timeout_as_the_timeout() -> None:
    assert read_figures([0.01, 0.02, 0.03], False, 30) == {
        "calls": 3, "timed_out": False, "p50_ms": 20.0, "p99_ms": 30.0, "max_ms": 30.0,
    }  # fmt: skip
    late = read_figures([1.0], True, 30)
    assert (late["calls"], late["timed_out"], late["p99_ms"]) == (2, True, 30_000.0)


def test_scale_ratios_compare_the_largest_size_with_the_smallest() -> None:
    def step(summary: float, page: float) -> dict[str, Any]:
        return {"project_seconds": 1.5, "reads": {"summary": {"p50_ms": summary},
                                                  "value_page": {"p50_ms": page}}}  # fmt: skip

    figures = scale_ratios({100_000: step(300.0, math.nan), 10_000: step(100.0, 50.0)})
    assert figures["summary_p50_ms"] == 300.0 and figures["summary_p50_ratio"] == 3.0
    assert "value_page_p50_ms" not in figures and "value_page_p50_ratio" not in figures
    assert figures["scale_10000_summary_p50_ms"] == 100.0
    assert figures["scale_100000_project_s"] == 1.5
    one = scale_ratios({5000: step(80.0, 40.0)})
    assert one["summary_p50_ms"] == 80.0 and "summary_p50_ratio" not in one
    assert scale_ratios({}) == {}


def test_anchor_ratios_are_over_the_same_run() -> None:
    figures = {
        "purchases_per_s": 400.0,
        "ceiling_requests_per_s": 2000.0,
        "peer_purchases_per_s": 800.0,
        "ceiling_cpu_ms_per_request": 0.5,
        "schema_ceiling_cpu_ms_per_request": math.nan,
        "api_cpu_ms_per_purchase": 2.0,
    }
    assert anchor_ratios(figures) == {
        "ratio_to_ceiling": 0.2,
        "ratio_to_peer": 0.5,
        "flask_cpu_share": 0.25,
    }
    assert anchor_ratios({"purchases_per_s": 400.0, "ceiling_requests_per_s": 0}) == {}


def _figures(**changes: float) -> dict[str, float]:
    met = {
        "purchases_per_s": 500.0, "ratio_to_ceiling": 0.4, "ratio_to_peer": 1.1,
        "status_read_p99_ms": 10.0, "long_history_ratio": 1.0, "peak_rss_mb": 200.0,
        "replay_events_per_s": 9000.0, "worker_lag_p99_s": 0.5, "summary_p50_ratio": 1.0,
        "summary_p50_ms": 20.0, "value_page_p50_ratio": 1.2, "value_page_p50_ms": 30.0,
        "value_class_page_p50_ratio": 1.4, "value_class_page_p50_ms": 40.0,
        "ratio": 0.01, "replay_ratio": 0.01, "import_ratio": 0.01,
        "webhook_delivery_lag_p99_s": 0.5, "webhook_purchases_ratio": 0.98,
        "followup_lag_p99_s": 0.4, "followup_purchases_ratio": 0.97,
    }  # fmt: skip
    return {**met, **changes}


def test_raw_ratios_are_information_and_decide_nothing() -> None:
    checks = verdicts(_figures(), {})
    for name in ("ratio", "replay_ratio", "import_ratio"):
        assert checks[name] == {"value": 0.01, "target": "", "verdict": INFO}
    assert "ratio_to_locked" not in checks  # not measured: not shown
    assert passed(checks, {})


@pytest.mark.parametrize(
    ("name", "value"),
    [("ratio_to_ceiling", 0.29), ("ratio_to_peer", 0.99), ("summary_p50_ms", 100.0),
     ("value_class_page_p50_ratio", 1.51), ("status_read_p99_ms", 20.1),
     ("webhook_delivery_lag_p99_s", 2.1), ("webhook_purchases_ratio", 0.85),
     ("followup_lag_p99_s", 1.01), ("followup_purchases_ratio", 0.89)],
)  # fmt: skip
def test_each_anchor_target_decides(name: str, value: float) -> None:
    checks = verdicts(_figures(**{name: value}), {})
    assert checks[name]["verdict"] == "FAIL"
    assert not passed(checks, {})


def test_skipped_phases_name_their_targets() -> None:
    args = parse_args(
        ["--no-ceiling", "--no-peer", "--no-scale-phase", "--no-webhooks", "--no-followups"]
    )
    skipped = skipped_targets(args)
    assert {"ratio_to_ceiling", "ratio_to_peer", "summary_p50_ms"} <= skipped.keys()
    assert {"webhook_delivery_lag_p99_s", "webhook_purchases_ratio"} <= skipped.keys()
    assert {"followup_lag_p99_s", "followup_purchases_ratio"} <= skipped.keys()
    assert skipped["value_page_p50_ratio"] == SKIPPED_SCALE
    one = skipped_targets(parse_args(["--scale-members", "5000"]))
    assert one["summary_p50_ratio"] == SKIPPED_ONE_SIZE and "summary_p50_ms" not in one
    figures = _figures()
    del figures["ratio_to_ceiling"], figures["summary_p50_ratio"]
    checks = verdicts(figures, skipped)
    assert checks["ratio_to_ceiling"]["verdict"] == skipped["ratio_to_ceiling"]
    assert passed(checks, skipped)
