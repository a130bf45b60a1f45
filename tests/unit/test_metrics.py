"""The metrics of api/metrics.py: one process on its own, several processes merged in one scrape
(prometheus_client's multiprocess mode, here with two fake process ids in one test process),
gunicorn's hooks, and the ledger's figures when the database does not answer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import values

from api import metrics as metrics_module
from api.metrics import MULTIPROCESS_DIR, LedgerFigures, Metrics
from domain.clock import SystemClock
from tests.scrapes import names, samples, value

REQUESTS = "daifuku_http_requests_total"


def scrape(metrics: Metrics, *collectors: Any) -> str:
    body, content_type = metrics.render(*collectors)
    assert content_type.startswith("text/plain; version=0.0.4")
    return body.decode()


@pytest.fixture
def shared_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Multiprocess mode in a fresh directory; the single-process values come back after."""
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    return tmp_path


def as_process(pid: int, monkeypatch: pytest.MonkeyPatch) -> Metrics:
    """The metrics a process with this id builds (its values in its own files)."""
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
    return Metrics()


def test_one_process_counts_its_requests_and_two_apps_do_not_share_counts() -> None:
    one, other = Metrics(), Metrics()
    for status in (200, 200, 404):
        one.request_started()
        one.request_finished("GET", "/healthz", status, 0.003)
    one.request_started()  # still running
    one.scheduler_ran(4)
    text = scrape(one)
    assert value(text, REQUESTS, method="GET", endpoint="/healthz", status="200") == 2
    assert value(text, REQUESTS, method="GET", endpoint="/healthz", status="404") == 1
    bucket = "daifuku_http_request_duration_seconds_bucket"
    assert value(text, bucket, method="GET", endpoint="/healthz", le="0.005") == 3
    assert value(text, "daifuku_http_requests_in_flight") == 1
    assert value(text, "daifuku_scheduler_events_recorded_total") == 4
    assert not any(name.endswith("_created") for name in names(text))
    assert value(scrape(other), REQUESTS, method="GET", endpoint="/healthz", status="200") is None


def test_a_scrape_in_multiprocess_mode_merges_every_process(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = as_process(101, monkeypatch)
    for _ in range(3):
        first.request_started()
        first.request_finished("POST", "/v1/purchases", 201, 0.02)
    first.request_started()  # in flight when the scrape comes
    first.scheduler_ran(2)
    second = as_process(102, monkeypatch)
    for _ in range(2):
        second.request_started()
        second.request_finished("POST", "/v1/purchases", 201, 0.2)
    second.scheduler_ran(0, failed=True)

    text = scrape(second)  # whichever process answers the scrape
    assert text == scrape(first)
    assert value(text, REQUESTS, method="POST", endpoint="/v1/purchases", status="201") == 5
    count = "daifuku_http_request_duration_seconds_count"
    assert value(text, count, method="POST", endpoint="/v1/purchases") == 5
    bucket = "daifuku_http_request_duration_seconds_bucket"
    assert value(text, bucket, method="POST", endpoint="/v1/purchases", le="0.025") == 3
    assert value(text, "daifuku_http_requests_in_flight") == 1
    assert value(text, "daifuku_scheduler_runs_total") == 2
    assert value(text, "daifuku_scheduler_failures_total") == 1
    assert value(text, "daifuku_scheduler_events_recorded_total") == 2
    started = {dict(labels)["pid"] for name, labels in samples(text) if "start_time" in name}
    assert started == {"101", "102"}
    assert {path.name for path in shared_dir.glob("counter_*.db")} == {
        "counter_101.db",
        "counter_102.db",
    }

    metrics_module.child_exit(None, SimpleNamespace(pid=101))  # gunicorn: the worker exited
    text = scrape(second)
    assert value(text, "daifuku_http_requests_in_flight") == 0  # its live figures left with it
    started = {dict(labels)["pid"] for name, labels in samples(text) if "start_time" in name}
    assert started == {"102"}
    assert value(text, REQUESTS, method="POST", endpoint="/v1/purchases", status="201") == 5


def test_metrics_built_after_the_directory_is_set_write_to_it(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prometheus_client was imported here without the variable: Metrics switches it over.
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    built = Metrics()
    built.request_started()
    built.request_finished("GET", "/healthz", 200, 0.001)
    assert built.multiprocess
    assert list(shared_dir.glob("counter_*.db"))
    text = scrape(Metrics())
    assert value(text, REQUESTS, method="GET", endpoint="/healthz", status="200") == 1


def test_the_master_empties_a_given_directory_and_removes_only_one_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(MULTIPROCESS_DIR, "")
    monkeypatch.setenv(metrics_module._CREATED_DIR, "")
    monkeypatch.setattr(metrics_module, "_prepared", None)
    server = SimpleNamespace(log=SimpleNamespace(info=lambda *args: None))

    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_7.db").write_bytes(b"from an earlier run")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(given))
    metrics_module.on_starting(server)
    assert sorted(path.name for path in given.iterdir()) == ["notes.txt"]
    # The master's own figures (a scheduler's, say), written after it prepared the directory,
    # stay when gunicorn's hook prepares it again.
    Metrics().scheduler_ran(1)
    written = sorted(path.name for path in given.iterdir())
    assert len(written) > 1
    metrics_module.on_starting(server)
    assert sorted(path.name for path in given.iterdir()) == written
    metrics_module.on_exit(server)
    assert given.is_dir()

    monkeypatch.setenv(MULTIPROCESS_DIR, "")
    metrics_module.on_starting(server)
    made = Path(metrics_module.multiprocess_dir() or "")
    assert made.is_dir() and made != given
    metrics_module.on_exit(server)
    assert not made.exists()


class Unreachable:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise OSError("connection refused")

        return fail


def test_the_ledger_figures_leave_out_what_the_database_does_not_answer() -> None:
    ledger: Any = SimpleNamespace(name="Daifuku", recorder=Unreachable(), mapper=Unreachable())
    views: Any = Unreachable()
    text = scrape(Metrics(), LedgerFigures(ledger, views, SystemClock()))
    assert value(text, "daifuku_ledger_figures_up") == 0
    assert not names(text) & {
        "daifuku_ledger_events_appended_total",
        "daifuku_read_models_position",
        "daifuku_projection_lag_events",
        "daifuku_projection_lag_seconds",
        "daifuku_analytics_age_seconds",
    }
    assert value(text, "daifuku_http_requests_in_flight") == 0
