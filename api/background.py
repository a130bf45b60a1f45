"""The scheduler, the projection worker, the webhook dispatcher and the follow-up process of
``daifuku serve``, in one process of their own.

gunicorn runs it as its one "dirty worker" (``dirty_workers = 1``, api/server.py): a process
forked by gunicorn's dirty arbiter, itself forked by the master before the HTTP workers and
before any thread exists, so no fork ever copies a thread of ours. gunicorn keeps exactly one
such process whatever the number of HTTP workers, starts a new one if it dies, and stops it
(``close``) when the server stops. HTTP workers never call it; it only works in the background.
"""

from __future__ import annotations

import logging

from gunicorn.dirty import DirtyApp

from adapters.followup_process import FollowupThread, open_followup_thread
from adapters.keys import KeyStore
from adapters.projections import ProjectionThread
from adapters.settings import Settings
from adapters.views import MemberStatusView, open_member_status_view
from adapters.webhook_dispatch import WebhookThread, open_webhook_thread
from api import representations
from api.bootstrap import bootstrap
from api.metrics import Metrics
from api.scheduler import Scheduler
from domain.ledger import Ledger

log = logging.getLogger(__name__)


class BackgroundWork(DirtyApp):
    """Records time-driven changes and keeps the read models up to date until closed."""

    workers = 1

    def __init__(self) -> None:
        self._ledger: Ledger | None = None
        self._views: MemberStatusView | None = None
        self._scheduler: Scheduler | None = None
        self._projector: ProjectionThread | None = None
        self._keys: KeyStore | None = None
        self._webhooks: WebhookThread | None = None
        self._followups: FollowupThread | None = None

    def init(self) -> None:
        settings = Settings.from_environ()
        ledger, keys, _ = bootstrap(settings)
        self._ledger, self._keys = ledger, keys
        # Its own figures: under prometheus-client's multiprocess mode they join the workers'.
        metrics = Metrics()
        self._scheduler = Scheduler(ledger, metrics).start()
        self._webhooks = open_webhook_thread(
            ledger,
            settings.database,
            settings.webhooks_allow_private,
            observe=lambda o, now: metrics.webhook_attempted(o.state, o.recorded_at, now),
            retention_days=settings.webhooks_retention_days,
        ).start()
        if settings.followups:
            self._followups = open_followup_thread(ledger, settings.database).start()
        if settings.read_models == "views":
            self._views = open_member_status_view(ledger.env)
            self._projector = ProjectionThread(ledger, self._views, representations).start()
        started = ["scheduler", "webhook dispatcher"]
        started += ["follow-up process"] if self._followups else []
        started += ["projection worker"] if self._projector else []
        log.info("background work started: %s", ", ".join(started))

    def __call__(self, action: str, *args: object, **kwargs: object) -> None:
        raise ValueError("the background work takes no requests")

    def close(self) -> None:
        loops = [
            loop
            for loop in (self._webhooks, self._followups, self._projector, self._scheduler)
            if loop
        ]
        for loop in loops:  # all told at once: stopping takes the longest one's time, not the sum
            loop.request_stop()
        for loop in loops:
            loop.stop()
        if self._views is not None:
            self._views.close()
        if self._ledger is not None:
            self._ledger.close()
        if self._keys is not None:
            self._keys.close()
        log.info("background work stopped")
