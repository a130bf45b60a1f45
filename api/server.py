"""``daifuku serve``: the API under gunicorn, the scheduler and the projection worker beside it.

The processes: gunicorn's master (no thread of its own, no database connection once it forks);
``--workers`` HTTP workers of ``--threads`` threads each (gthread), each building the app after
the fork; and gunicorn's dirty arbiter with its one dirty worker running api/background.py's
``BackgroundWork``: the scheduler and the projection worker, exactly once whatever the number
of HTTP workers, restarted by gunicorn if it dies. Not in the master: it forks a new worker
whenever one dies, and a fork copies only the forking thread, so a lock held by a background
thread at that instant would never be released in the child. Not in one designated worker:
gunicorn replaces workers (after a crash, a timeout, a reload) and none would be designated
in between, and request threads would share its interpreter lock with the projection.

SIGTERM: the master stops accepting, lets each worker finish its requests in flight (up to
``GRACEFUL_TIMEOUT`` seconds), stops the background work and exits 0.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from adapters.settings import Settings
from api import logs, metrics
from api.bootstrap import build_app, close_app

# SQLite takes one writer at a time for the whole file: several processes would queue on its
# lock and each keep a member cache of its own, so one process serves, with threads for the
# requests that wait on the disk or on a read model.
SQLITE_WORKERS = 1
# PostgreSQL: a process per core, since a request's CPU work in Python holds the interpreter
# lock; the bench (bench/server.py) found more processes than cores no faster on 2 cores, and
# each one costs ~65 MiB and a cache of its own. At most 3 by default: each process opens ~20
# connections (a pool of 10 for the ledger, more for the read models, keys and vault), and 3
# workers with the background process stay well below PostgreSQL's default max_connections
# (100); more workers need a raised max_connections and --workers. 8 threads a process cover
# the waits on the database (2 x 8 is the bench's configuration on its 2-core machine).
POSTGRES_WORKERS = (2, 3)  # at least, at most
THREADS = 8
GRACEFUL_TIMEOUT = 30  # seconds a stopping worker has for the requests in flight
WORKER_TIMEOUT = 120  # seconds a worker's main loop may go silent before it is replaced
BACKGROUND_APP = "api.background:BackgroundWork"


def cpu_count() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(settings: Settings) -> int:
    if settings.database.kind == "sqlite":
        return SQLITE_WORKERS
    fewest, most = POSTGRES_WORKERS
    return min(max(fewest, cpu_count()), most)


class DaifukuServer(BaseApplication):
    """gunicorn's documented custom application: the options below, the app built per worker."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        app, _, _ = build_app(self._settings)
        return app


def options(settings: Settings, host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "bind": [address],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "accesslog": None,  # api/logs.py writes the one line per request
        "errorlog": "-",
        "loglevel": "info",
        "logconfig_dict": logs.log_config(settings.log_format),
        # gunicorn's control socket would be a thread in the master (which forks) and a file
        # in the working directory.
        "control_socket_disable": True,
        "dirty_apps": [BACKGROUND_APP],
        "dirty_workers": 1,
        "dirty_graceful_timeout": GRACEFUL_TIMEOUT,
        # The dirty arbiter's pid file is named after the process name, in the shared temporary
        # directory, and a new master kills the process it names: one name per server, so that
        # two servers on one machine leave each other's background work alone.
        "proc_name": f"daifuku-{os.getpid()}",
        "when_ready": _when_ready(host),
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,
        "dirty_worker_exit": _child_exit,
        # prometheus-client's multiprocess mode: one directory every process writes its figures
        # to (made before the first fork), so a scrape of any worker covers them all.
        "on_starting": metrics.on_starting,
        "on_exit": metrics.on_exit,
    }


def serve(settings: Settings, host: str, port: int, workers: int, threads: int) -> int:
    """Run gunicorn until it is stopped; its exit status."""
    main = threading.main_thread()
    running = [thread.name for thread in threading.enumerate() if thread is not main]
    if running:
        raise RuntimeError(f"threads running before gunicorn forks: {', '.join(running)}")
    try:
        DaifukuServer(settings, options(settings, host, port, workers, threads)).run()
    except SystemExit as stopped:
        return stopped.code if isinstance(stopped.code, int) else 1
    return 0


def _when_ready(host: str) -> Any:
    def when_ready(arbiter: Any) -> None:
        port = arbiter.LISTENERS[0].sock.getsockname()[1]
        print(f"Listening on http://{host}:{port} (docs at /docs)", flush=True)

    return when_ready


def _worker_exit(arbiter: Any, worker: Any) -> None:
    """In a worker that stops, once its requests are answered: close what the app opened."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        close_app(app)


def _child_exit(arbiter: Any, worker: Any) -> None:
    """In the master (or the dirty arbiter) when a worker has exited: its live figures (requests
    in flight, start time) leave the scrape; its counts stay."""
    metrics.child_exit(arbiter, worker)
