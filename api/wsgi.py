"""``gunicorn api.wsgi:app``: the server built from the environment (``daifuku serve`` runs
gunicorn itself, with the background work: api/server.py).

Set DAIFUKU_RUN_SCHEDULER=1 in exactly one place (one worker, or run ``daifuku scheduler``
separately) to record time-driven changes in the background. Reads come from the read models
(DAIFUKU_READ_MODELS=views, the default): run ``daifuku project`` beside the server to keep them
up to date (docker-compose.yml's worker service does), or set DAIFUKU_READ_MODELS=ledger.

``gunicorn -c python:api.gunicorn_config ...`` gives gunicorn the hooks that make ``/metrics``
count every worker (api/metrics.py); without them each scrape sees the worker that answered.
"""

from __future__ import annotations

import atexit

from flask import Flask

from adapters.settings import Settings
from api import logs
from api.bootstrap import build_app, close_app
from api.context import EXTENSION
from api.scheduler import Scheduler


def _start() -> Flask:
    settings = Settings.from_environ()
    # One line per request (gunicorn's access log is off unless asked for); gunicorn's own
    # messages keep going where its options say.
    logs.configure(settings.log_format, gunicorn=False)
    application, ledger, _ = build_app(settings)
    scheduler: Scheduler | None = None
    if settings.run_scheduler:
        scheduler = Scheduler(ledger, application.extensions[EXTENSION].metrics).start()

    def stop() -> None:
        if scheduler is not None:
            scheduler.stop()
        close_app(application)

    atexit.register(stop)
    return application


app = _start()
