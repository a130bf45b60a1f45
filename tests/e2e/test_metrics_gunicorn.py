"""``/metrics`` under gunicorn with two workers: one scrape, whichever worker answers it,
counts the requests every worker answered, and reports the ledger's figures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import MultiProcessCollector

from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.settings import Settings
from adapters.views import open_member_status_view
from api import representations
from api.bootstrap import bootstrap
from devtools.postgres import free_port
from tests.e2e.test_cli import ROOT
from tests.scrapes import samples, value

WORKERS = 2
HEALTHZ = {"method": "GET", "endpoint": "/healthz", "status": "200"}


def get(url: str, key: str | None = None, body: Any = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except OSError:
        return 0, ""


def worker_pids(text: str) -> set[str]:
    """The live processes that built their metrics (one start time series each)."""
    return {
        dict(labels)["pid"]
        for name, labels in samples(text)
        if name == "daifuku_process_start_time_seconds"
    }


@contextmanager
def gunicorn(database_url: str, metrics_dir: Path) -> Iterator[str]:
    """``gunicorn -c python:api.gunicorn_config -w 2 api.wsgi:app`` on a free loopback port,
    every worker booted: its URL."""
    env = {
        **os.environ,
        "DAIFUKU_DATABASE_URL": database_url,
        "DAIFUKU_READ_MODELS": "views",  # and no projection running: the test moves the views
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONUNBUFFERED": "1",
    }
    for _attempt in range(3):  # the free port may be taken between the probe and the bind
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_config"]
        command += ["--workers", str(WORKERS), "--worker-class", "sync"]
        command += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning", "api.wsgi:app"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, start_new_session=True, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                status, text = get(f"{url}/metrics")
                if status == 200 and len(worker_pids(text)) == WORKERS:
                    break
                time.sleep(0.2)
            else:
                continue
            yield url
            return
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    raise AssertionError("gunicorn never had its workers answering")


def answered_by_each(metrics_dir: Path, pids: set[str]) -> dict[str, float]:
    """How many /healthz requests each worker answered, from its own file."""
    counts = {}
    for pid in pids:
        merged = MultiProcessCollector.merge([str(metrics_dir / f"counter_{pid}.db")])
        counts[pid] = sum(
            sample.value
            for family in merged
            for sample in family.samples
            if sample.name == "daifuku_http_requests_total" and sample.labels == HEALTHZ
        )
    return counts


def test_one_scrape_counts_the_requests_of_every_worker_and_the_ledger(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, _ = bootstrap(settings)  # the schema, before two workers race to make it
    views = open_member_status_view(ledger.env)
    try:
        storefront = keys.create("storefront", "metrics e2e")
        metrics_dir = tmp_path / "metrics"
        with gunicorn(database_url, metrics_dir) as url:
            pids = worker_pids(get(f"{url}/metrics")[1])
            # Requests four at a time: a sync worker answers one at a time, so both answer.
            sent = 0
            with ThreadPoolExecutor(4) as pool:
                while sent < 400 and min(answered_by_each(metrics_dir, pids).values()) == 0:
                    statuses = list(pool.map(lambda _: get(f"{url}/healthz")[0], range(20)))
                    assert statuses == [200] * 20
                    sent += 20
            by_worker = answered_by_each(metrics_dir, pids)
            assert min(by_worker.values()) > 0, by_worker
            assert sum(by_worker.values()) == sent
            for _ in range(6):  # every scrape, whichever worker answers it, counts them all
                status, text = get(f"{url}/metrics")
                assert status == 200
                assert value(text, "daifuku_http_requests_total", **HEALTHZ) == sent
                assert worker_pids(text) == pids

            for n in range(3):  # events appended, the views not moving
                member = {"member_id": f"m{n}", "email": f"m{n}@example.com"}
                assert get(f"{url}/v1/members", storefront, member)[0] == 201
            head = ledger.recorder.max_notification_id()
            text = get(f"{url}/metrics")[1]
            assert value(text, "daifuku_ledger_events_appended_total") == head
            assert value(text, "daifuku_read_models_position") == 0
            assert value(text, "daifuku_projection_lag_events") == head
            assert value(text, "daifuku_ledger_figures_up") == 1

            projection = MemberStatusProjection(views, ledger, representations)
            ProjectionWorker(ledger, projection).catch_up()
            text = get(f"{url}/metrics")[1]
            assert value(text, "daifuku_read_models_position") == head
            assert value(text, "daifuku_projection_lag_events") == 0
            assert value(text, "daifuku_projection_lag_seconds") == 0
            age = value(text, "daifuku_analytics_age_seconds")
            assert age is not None and age >= 0
    finally:
        views.close()
        ledger.close()
        keys.close()
