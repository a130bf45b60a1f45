"""``/metrics`` through ``prometheus_client``: HTTP and scheduler figures of every process, and
the ledger's own figures read from the database at scrape time.

Two modes, chosen by the environment when ``Metrics`` is built:

- one process (tests, ``daifuku serve --dev``, werkzeug): the figures live in this process and
  a scrape reports them;
- several processes (gunicorn): with ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its
  figures to its own files in that directory and a scrape, whichever worker answers it, merges
  them all (``prometheus_client``'s multiprocess mode). The gunicorn master prepares the
  directory before the first fork and forgets a worker that exits: the hooks ``on_starting``,
  ``child_exit`` and ``on_exit`` below, which ``api/gunicorn_config.py`` hands to gunicorn
  (``gunicorn -c python:api.gunicorn_config ...``).

The ledger's figures (head position, projection lag, analytics age) are computed by a collector
registered in each scrape's own registry, never stored in a multiprocess gauge, so they are
read once per scrape and not summed over workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from adapters.followup_tables import FollowupTables
    from adapters.views import MemberStatusView
    from adapters.webhook_outbox import Outbox
    from domain.clock import Clock
    from domain.ledger import Ledger

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
DISPATCHER_NAME = "webhooks"  # the webhook dispatcher's tracking name (adapters/webhook_dispatch)
FOLLOWUP_PROCESS_NAME = "followups"  # the follow-up process's (adapters/followup_process)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what a scrape gets unless it asks for OpenMetrics
OPENMETRICS_CONTENT_TYPE = OPENMETRICS.split(";")[0]
log = logging.getLogger(__name__)

# No ``*_created`` series beside every counter and histogram: they double the output and no
# dashboard of ours reads them (multiprocess mode never exports them anyway).
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, or None in one process."""
    return os.environ.get(MULTIPROCESS_DIR) or None


def _use_multiprocess_values() -> None:
    """Make the metrics built from now on write to the shared directory.

    ``prometheus_client`` reads the environment once, when it is first imported; a process
    that imported it before the directory was set (a gunicorn master that loaded this module
    with its configuration) switches here, before any worker forks or builds its metrics.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class Metrics:
    """The HTTP and scheduler figures of one process, and the scrape of all of them."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess:
            _use_multiprocess_values()
        # registry=None: nothing global. In one process a scrape registers these in its own
        # registry; in multiprocess mode their values go to this process's files and a scrape
        # reads every process's files instead.
        self.requests = Counter(
            "daifuku_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "endpoint", "status"],
            registry=None,
        )
        self.latency = Histogram(
            "daifuku_http_request_duration_seconds",
            "Time to answer a request.",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.in_flight = Gauge(
            "daifuku_http_requests_in_flight",
            "Requests being answered right now (every live process).",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.started = Gauge(
            "daifuku_process_start_time_seconds",
            "When the process started (Unix time); one series per live process under gunicorn.",
            multiprocess_mode="liveall",
            registry=None,
        )
        self.scheduler_runs = Counter("daifuku_scheduler_runs", "Scheduler passes.", registry=None)
        self.scheduler_failures = Counter(
            "daifuku_scheduler_failures", "Scheduler passes that raised.", registry=None
        )
        self.scheduler_events = Counter(
            "daifuku_scheduler_events_recorded",
            "Time-driven events recorded by the scheduler.",
            registry=None,
        )
        self.scheduler_last_run = Gauge(
            "daifuku_scheduler_last_run_timestamp_seconds",
            "When the last scheduler pass ended (Unix time, 0 before the first).",
            multiprocess_mode="max",
            registry=None,
        )
        self.webhook_attempts = Counter(
            "daifuku_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered, retry (failed, tried again "
            "later) or failed (no retry left).",
            ["outcome"],
            registry=None,
        )
        self.webhook_delivery = Histogram(
            "daifuku_webhook_delivery_seconds",
            "From an event's recording to its message's delivery.",
            buckets=LATENCY_BUCKETS + (30.0, 60.0, 300.0, 3600.0),
            registry=None,
        )
        self.started.set(time.time())
        self._own: list[Collector] = [
            self.requests,
            self.latency,
            self.in_flight,
            self.started,
            self.scheduler_runs,
            self.scheduler_failures,
            self.scheduler_events,
            self.scheduler_last_run,
            self.webhook_attempts,
            self.webhook_delivery,
        ]

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.in_flight.dec()
        self.requests.labels(method, endpoint, str(status)).inc()
        self.latency.labels(method, endpoint).observe(seconds)

    def scheduler_ran(self, events: int, failed: bool = False) -> None:
        self.scheduler_runs.inc()
        self.scheduler_events.inc(events)
        if failed:
            self.scheduler_failures.inc()
        self.scheduler_last_run.set(time.time())

    def webhook_attempted(self, state: str, recorded_at: float, now: float) -> None:
        outcome = {"delivered": "delivered", "pending": "retry"}.get(state, "failed")
        self.webhook_attempts.labels(outcome).inc()
        if state == "delivered":
            self.webhook_delivery.observe(max(now - recorded_at, 0.0))

    def registry(self, *collectors: Collector) -> CollectorRegistry:
        """A scrape's registry: every process's figures (this one's alone outside multiprocess
        mode) and the given collectors, read when the registry is collected."""
        registry = CollectorRegistry()
        directory = multiprocess_dir() if self.multiprocess else None
        if directory is not None:
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        else:
            for collector in self._own:
                registry.register(collector)
        for collector in collectors:
            registry.register(collector)
        return registry

    def render(self, *collectors: Collector, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type: the Prometheus text format, or OpenMetrics when
        the ``Accept`` header asks for it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry(*collectors)), content_type


class LedgerFigures:
    """The ledger's figures, read from the database when a scrape collects them.

    Three indexed reads: the log's head (its largest notification id), the views' tracking
    position, and the two events around that position (the last applied one and the first
    one not applied yet), for their recorded times. A read that fails leaves its figures out
    and ``daifuku_ledger_figures_up`` at 0; the scrape itself still answers.
    """

    def __init__(self, ledger: Ledger, views: MemberStatusView | None, clock: Clock) -> None:
        self._ledger = ledger
        self._views = views
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check against the scrape's other names: read at collect time

    def collect(self) -> Iterator[Metric]:
        up = True
        head: int | None = None
        try:
            head = self._ledger.recorder.max_notification_id() or 0
        except Exception as error:  # the database does not answer: report the rest
            log.warning("metrics: the log's head could not be read: %s", error)
            up = False
        if head is not None:
            yield CounterMetricFamily(
                "daifuku_ledger_events_appended",
                "Events appended to the ledger: the log's head position, read at scrape time.",
                value=head,
            )
        if self._views is not None:
            projected = yield from self._projection(head)
            up = up and projected
        yield GaugeMetricFamily(
            "daifuku_ledger_figures_up",
            "1 if every ledger figure could be read from the database at this scrape, else 0.",
            value=int(up),
        )

    def _projection(self, head: int | None) -> Generator[Metric, None, bool]:
        """The views' figures; returns whether all of them could be read (a generator's
        return value, taken by ``yield from``)."""
        assert self._views is not None
        try:
            position = self._views.max_tracking_id(self._ledger.name) or 0
        except Exception as error:
            log.warning("metrics: the read models' position could not be read: %s", error)
            return False
        yield GaugeMetricFamily(
            "daifuku_read_models_position",
            "The last log position the read models (status, purchases, analytics) applied.",
            value=position,
        )
        if head is not None:
            yield GaugeMetricFamily(
                "daifuku_projection_lag_events",
                "Events appended to the ledger and not yet applied to the read models.",
                value=max(head - position, 0),
            )
        try:
            applied, waiting = self._around(position)
        except Exception as error:
            log.warning("metrics: the events around the read models' position: %s", error)
            return False
        now = self._clock.now()
        yield GaugeMetricFamily(
            "daifuku_projection_lag_seconds",
            "How long ago the oldest event not yet applied to the read models was recorded "
            "(0 when they have applied every event).",
            value=0.0 if waiting is None else max((now - waiting).total_seconds(), 0.0),
        )
        if applied is not None:
            yield GaugeMetricFamily(
                "daifuku_analytics_age_seconds",
                "How long ago the last event the read models (analytics included) applied was "
                "recorded; with no projection lag, how long the ledger has been quiet.",
                value=max((now - applied).total_seconds(), 0.0),
            )
        return True

    def _around(self, position: int) -> tuple[Any, Any]:
        """When the event at ``position`` and the first event after it were recorded (None
        for one there is not), in one indexed read of at most two notifications."""
        applied = waiting = None
        ledger = self._ledger
        for notification in ledger.recorder.select_notifications(start=max(position, 1), limit=2):
            event: Any = ledger.mapper.to_domain_event(notification)
            recorded = event.timestamp
            if notification.id <= position:
                applied = recorded
            elif waiting is None:
                waiting = recorded
        return applied, waiting


class WebhookFigures:
    """The webhook dispatcher's figures, read from the outbox at scrape time: deliveries
    waiting (and retrying), the oldest one's age, and how far the dispatcher is behind."""

    def __init__(self, ledger: Ledger, outbox: Outbox) -> None:
        self._ledger = ledger
        self._outbox = outbox

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            waiting, retrying, oldest = self._outbox.waiting()
            position = self._outbox.max_tracking_id(DISPATCHER_NAME) or 0
            head = self._ledger.recorder.max_notification_id() or 0
        except Exception as error:
            log.warning("metrics: the webhook outbox could not be read: %s", error)
            return
        yield GaugeMetricFamily(
            "daifuku_webhook_deliveries_waiting",
            "Webhook deliveries not yet delivered (due, or waiting for a retry).",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "daifuku_webhook_retries_pending",
            "Waiting webhook deliveries whose last attempt failed.",
            value=retrying,
        )
        yield GaugeMetricFamily(
            "daifuku_webhook_oldest_waiting_seconds",
            "How long ago the event of the oldest waiting delivery was recorded (0: none).",
            value=0.0 if oldest is None else max(time.time() - oldest, 0.0),
        )
        yield GaugeMetricFamily(
            "daifuku_webhook_dispatcher_lag_events",
            "Events appended to the ledger that the webhook dispatcher has not read yet.",
            value=max(head - position, 0),
        )


class FollowupFigures:
    """How far the follow-up process is behind the log, read at scrape time."""

    def __init__(self, ledger: Ledger, tables: FollowupTables) -> None:
        self._ledger = ledger
        self._tables = tables

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            position = self._tables.max_tracking_id(FOLLOWUP_PROCESS_NAME) or 0
            head = self._ledger.recorder.max_notification_id() or 0
        except Exception as error:
            log.warning("metrics: the follow-up tables could not be read: %s", error)
            return
        yield GaugeMetricFamily(
            "daifuku_followup_process_lag_events",
            "Events appended to the ledger that the follow-up process has not read yet.",
            value=max(head - position, 0),
        )


# gunicorn server hooks (api/gunicorn_config.py). The master runs them: ``on_starting`` before
# it forks the first worker, ``child_exit`` when a worker has exited, ``on_exit`` last.

_CREATED_DIR = "DAIFUKU_METRICS_DIR_CREATED"  # set when on_starting made a temporary directory
_prepared: tuple[int, Path] | None = None  # the process that prepared a directory, and which


def prepare_multiprocess_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Make ``directory`` (``PROMETHEUS_MULTIPROC_DIR`` if None, else a new temporary one) the
    shared directory of every process started from now on, emptied of an earlier run's files.

    Call it in the process that starts the workers, before they start: it sets the variable
    in this process's environment, which the workers inherit. Called again in the same process
    for the same directory, it leaves the directory as it is (the files this process wrote
    since stay).
    """
    global _prepared
    given = directory if directory is not None else multiprocess_dir()
    if given is not None and _prepared == (os.getpid(), Path(given)):
        return Path(given)
    if given is None:
        path = Path(tempfile.mkdtemp(prefix="daifuku-metrics-"))
        os.environ[_CREATED_DIR] = str(path)
    else:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # only the library's own files: the rest is not ours
            stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(path)
    _use_multiprocess_values()
    _prepared = (os.getpid(), path)
    return path


def remove_multiprocess_dir() -> None:
    """Remove the directory ``prepare_multiprocess_dir`` created (one it was given stays)."""
    global _prepared
    _prepared = None
    created = os.environ.pop(_CREATED_DIR, None)
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


def on_starting(server: Any) -> None:
    """gunicorn hook: the shared directory, ready before the first worker forks."""
    path = prepare_multiprocess_dir()
    server.log.info("metrics of every worker in %s", path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker's live figures (requests in flight, start time) leave with it;
    its counts stay in the totals."""
    mark_process_dead(worker.pid, multiprocess_dir())  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """gunicorn hook: the temporary directory goes when the master does."""
    remove_multiprocess_dir()
