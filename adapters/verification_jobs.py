"""Verifications as jobs: started by one request, run in a thread of the process that got it,
their state in ``daifuku_verifications`` beside the ledger, so that every worker process of the
server answers for every job.

At most one job runs at a time: the ``running`` column is unique and set only while a job runs,
so two starts racing in two processes insert one row. The thread running a job beats a
heartbeat into its row. A row still marked running whose process is gone (same host, no such
pid, or this very process without the job's thread) or whose heartbeat is older than
``stale_after`` is reported as interrupted, and the next start marks it so and starts afresh.
Finished jobs are kept: a row each, their result with it.

The replay reads the ledger a page at a time in short read transactions and writes only to its
own scratch file; the live rows are read in one read-only snapshot. Nothing here holds a write
lock of the ledger or of the views for longer than one small update of this table. It does
share the interpreter with the requests of its process: its full garbage collections pause them
(up to about 0.6 s each on 54,000 events); ``daifuku audit verify`` runs one in a process of its
own, recorded in the same table.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from uuid import uuid4

from adapters.projections import ProgressReport, Shapes
from adapters.settings import Database
from adapters.sidetables import Connection, SQLiteConnection, connect
from adapters.verification import Verification, VerificationStopped
from adapters.verification_process import verify_in_child
from adapters.views import MemberStatusView, open_member_status_view
from domain.clock import Clock
from domain.ledger import Ledger

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"
STATUSES = (RUNNING, DONE, FAILED, INTERRUPTED)
HEARTBEAT_SECONDS = 5.0
PROGRESS_SECONDS = 1.0  # progress is written at most this often (and on the first report)
STALE_AFTER = timedelta(seconds=60)  # a running job without a heartbeat for this long is dead
HOST = socket.gethostname()

SCHEMA_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS daifuku_verifications ("
    " id text PRIMARY KEY, status text NOT NULL, running integer UNIQUE, owner text NOT NULL,"
    " started_at text NOT NULL, heartbeat_at text NOT NULL, finished_at text,"
    " events_done bigint NOT NULL, events_total bigint, rate double precision NOT NULL,"
    " result text, error text)",
)
COLUMNS = (
    "id, status, owner, started_at, heartbeat_at, finished_at, events_done, events_total, rate,"
    " result, error"
)
SELECT = f"SELECT {COLUMNS} FROM daifuku_verifications WHERE id = ?"
SELECT_RUNNING = f"SELECT {COLUMNS} FROM daifuku_verifications WHERE running = 1"
INSERT = (
    "INSERT INTO daifuku_verifications (id, status, running, owner, started_at, heartbeat_at,"
    " events_done, rate) VALUES (?, 'running', 1, ?, ?, ?, 0, 0) ON CONFLICT DO NOTHING"
    " RETURNING id"
)
BEAT = "UPDATE daifuku_verifications SET heartbeat_at = ? WHERE id = ? AND running = 1 RETURNING id"
PROGRESS = (
    "UPDATE daifuku_verifications SET events_done = ?, events_total = ?, rate = ?,"
    " heartbeat_at = ? WHERE id = ? AND running = 1 RETURNING id"
)
FINISH = (
    "UPDATE daifuku_verifications SET status = ?, running = NULL, finished_at = ?,"
    " events_done = COALESCE(?, events_done), events_total = COALESCE(?, events_total),"
    " result = ?, error = ? WHERE id = ? AND running = 1"
)
# Only if its heartbeat is the one seen: a job that beat in between is alive after all.
GIVE_UP = (
    "UPDATE daifuku_verifications SET status = 'interrupted', running = NULL, finished_at = ?,"
    " error = ? WHERE id = ? AND running = 1 AND heartbeat_at = ?"
)

# The verification a job runs: the real one, or a test's stand-in wrapped around it.
Verify = Callable[[Ledger, MemberStatusView, Shapes, ProgressReport, threading.Event], Verification]

# The jobs whose threads run in this process, by id, with the pid that started them (a forked
# child inherits the dict but not the threads).
_here: dict[str, int] = {}
_here_lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    owner: str  # host:pid of the process that runs it
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    events_done: int
    events_total: int | None
    rate: float  # events replayed per second
    result: dict[str, Any] | None  # the verification's answer, once done
    error: str | None  # why it failed or was interrupted


class VerificationJobs:
    """Starts verification jobs, runs them in threads of this process, and answers for them."""

    def __init__(
        self,
        db: Connection,
        ledger: Ledger,
        shapes: Shapes,
        clock: Clock,
        *,
        stale_after: timedelta = STALE_AFTER,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._db = db
        self._db.create_tables(SCHEMA_STATEMENTS)
        self.ledger = ledger
        self.shapes = shapes
        self.clock = clock
        self.stale_after = stale_after
        self.heartbeat_seconds = heartbeat_seconds
        # In a child process, out of the way of the requests (the seam a test replaces).
        self.verify: Verify = verify_in_child
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._lock = threading.Lock()

    @classmethod
    def on_database(cls, database: Database, ledger: Ledger, shapes: Shapes, clock: Clock) -> Self:
        """Kept in ``daifuku_verifications`` in the ledger's own database."""
        return cls(connect(database, name="daifuku-verifications"), ledger, shapes, clock)

    @classmethod
    def in_memory(cls, ledger: Ledger, shapes: Shapes, clock: Clock) -> Self:
        """For an app built without a database of its own: the jobs of this process only."""
        return cls(SQLiteConnection(":memory:"), ledger, shapes, clock)

    def start(self) -> tuple[Job, bool]:
        """The running job, or else a new one started here; and whether it was started here.

        Raises ValueError when the ledger's store has no read models to verify."""
        for _ in range(3):  # each turn ends a dead job, or loses a race to a live one
            running = self._running()
            if running is not None:
                if self._alive(running):
                    return running, False
                self._give_up(running)
                continue
            started = self._start_new()
            if started is not None:
                return started, True
        raise RuntimeError("another process keeps starting and ending verifications")

    def find(self, job_id: str) -> Job | None:
        """The job as it stands; a running one whose process is gone reads as interrupted."""
        rows = self._db.run(SELECT, (job_id,))
        if not rows:
            return None
        job = _job(rows[0])
        if job.status == RUNNING and not self._alive(job):
            return _interrupted(job, self._why_dead(job))
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """The job once its thread here has ended (or ``timeout`` has passed); a job that runs
        in another process is read as it stands, after ``timeout``."""
        with self._lock:
            found = self._threads.get(job_id)
        if found is not None:
            found[0].join(timeout)
        elif timeout:
            threading.Event().wait(timeout)
        return self.find(job_id)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the jobs running here (they end as interrupted), then let go of the table."""
        with self._lock:
            running = list(self._threads.items())
        for _, (_, stop) in running:
            stop.set()
        for job_id, (thread, _) in running:
            thread.join(timeout)
            if thread.is_alive():
                self._finish(job_id, INTERRUPTED, error="the server stopped while it ran")
        self._db.close()

    def _start_new(self) -> Job | None:
        live = open_member_status_view(self.ledger.env)  # the 'no read models here' refusal
        job_id = str(uuid4())
        now = _text(self.clock.now())
        with _here_lock:  # before the row exists, so no reader here takes it for dead
            _here[job_id] = os.getpid()
        inserted: list[tuple[Any, ...]] = []
        try:
            inserted = self._db.run(INSERT, (job_id, f"{HOST}:{os.getpid()}", now, now))
        finally:
            if not inserted:  # another process started one first, or the insert failed
                _forget(job_id)
                live.close()
        if not inserted:
            return None
        stop = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(job_id, live, stop), name="daifuku-verification", daemon=True
        )
        with self._lock:
            self._threads[job_id] = (thread, stop)
        thread.start()
        return self.find(job_id)

    def _run(self, job_id: str, live: MemberStatusView, stop: threading.Event) -> None:
        ended = threading.Event()
        heart = threading.Thread(
            target=self._beat, args=(job_id, stop, ended), name="daifuku-verification-heartbeat"
        )
        heart.daemon = True
        heart.start()
        try:
            result = self.verify(self.ledger, live, self.shapes, self._reporter(job_id, stop), stop)
        except VerificationStopped as stopped:
            self._finish(job_id, INTERRUPTED, error=f"the server stopped while it ran ({stopped})")
        except Exception as error:
            log.exception("verification %s failed", job_id)
            self._finish(job_id, FAILED, error=f"{type(error).__name__}: {error}")
        else:
            self._finish(job_id, DONE, result=result.to_dict(), events=result.events)
        finally:
            ended.set()
            heart.join()
            live.close()
            with self._lock:
                self._threads.pop(job_id, None)
            _forget(job_id)

    def _reporter(self, job_id: str, stop: threading.Event) -> ProgressReport:
        """Writes the replay's progress into the row: the first report, then once a second."""
        last: float | None = None

        def report(done: int, total: int, seconds: float) -> None:
            nonlocal last
            if last is not None and seconds - last < PROGRESS_SECONDS and done < total:
                return
            last = seconds
            rate = done / seconds if seconds > 0 else 0.0
            now = _text(self.clock.now())
            try:
                written = self._db.run(PROGRESS, (done, total, rate, now, job_id))
            except Exception as error:  # the database away for a moment: the replay goes on
                log.warning("verification %s: progress not written: %s", job_id, error)
                return
            if not written:
                stop.set()  # another process gave it up for dead: this run no longer counts

        return report

    def _beat(self, job_id: str, stop: threading.Event, ended: threading.Event) -> None:
        while not ended.wait(self.heartbeat_seconds):
            try:
                if not self._db.run(BEAT, (_text(self.clock.now()), job_id)):
                    stop.set()
            except Exception as error:  # the database away for a moment: beat again later
                log.warning("verification %s: heartbeat not written: %s", job_id, error)

    def _finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        events: int | None = None,
        error: str | None = None,
    ) -> None:
        encoded = None if result is None else json.dumps(result, default=str)
        now = _text(self.clock.now())
        try:
            self._db.run(FINISH, (status, now, events, events, encoded, error, job_id))
        except Exception:
            log.exception("verification %s: its end (%s) was not recorded", job_id, status)

    def _running(self) -> Job | None:
        rows = self._db.run(SELECT_RUNNING)
        return _job(rows[0]) if rows else None

    def _alive(self, job: Job) -> bool:
        return self._why_dead(job) is None

    def _why_dead(self, job: Job) -> str | None:
        host, _, pid_text = job.owner.rpartition(":")
        pid = int(pid_text) if pid_text.isdigit() else -1
        if host == HOST and pid == os.getpid():  # this process knows its own threads
            with _here_lock:
                running_here = _here.get(job.id) == pid
            return None if running_here else f"the process that ran it ({job.owner}) restarted"
        if host == HOST and not _process_exists(pid):
            return f"the process that ran it ({job.owner}) is gone"
        silent = self.clock.now() - job.heartbeat_at
        if silent > self.stale_after:
            return f"no heartbeat from {job.owner} for {silent.total_seconds():.0f} s"
        return None

    def _give_up(self, job: Job) -> None:
        why = self._why_dead(job) or "its process is gone"
        self._db.run(GIVE_UP, (_text(job.heartbeat_at), why, job.id, _text(job.heartbeat_at)))


def _forget(job_id: str) -> None:
    with _here_lock:
        _here.pop(job_id, None)


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _interrupted(job: Job, why: str | None) -> Job:
    return Job(
        id=job.id,
        status=INTERRUPTED,
        owner=job.owner,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.heartbeat_at,  # its last sign of life
        events_done=job.events_done,
        events_total=job.events_total,
        rate=job.rate,
        result=None,
        error=why,
    )


def _job(row: tuple[Any, ...]) -> Job:
    job_id, status, owner, started, beat, finished, done, total, rate, result, error = row
    return Job(
        id=str(job_id),
        status=str(status),
        owner=str(owner),
        started_at=datetime.fromisoformat(started),
        heartbeat_at=datetime.fromisoformat(beat),
        finished_at=None if finished is None else datetime.fromisoformat(finished),
        events_done=int(done),
        events_total=None if total is None else int(total),
        rate=float(rate),
        result=None if result is None else json.loads(result),
        error=error,
    )


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
