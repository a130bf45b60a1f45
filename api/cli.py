"""The ``daifuku`` command: manage API keys, serve the HTTP API, run the scheduler."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from werkzeug.serving import is_running_from_reloader, run_simple

from adapters.background import BackgroundLoop
from adapters.export import export_lines, verify_lines
from adapters.followup_process import POLL_SECONDS as FOLLOWUP_POLL_SECONDS
from adapters.followup_process import FollowupProcess, open_followup_thread
from adapters.followup_tables import FollowupTables
from adapters.keys import (
    KEY_ROLES,
    KeyNotRotatable,
    KeyStore,
    LastAdminKey,
    UnknownKey,
)
from adapters.projections import (
    MemberStatusProjection,
    ProjectionThread,
    ProjectionWorker,
    replay,
)
from adapters.settings import ConfigurationError, Settings
from adapters.verification_jobs import RUNNING, VerificationJobs
from adapters.views import MemberStatusView, open_member_status_view
from adapters.webhook_dispatch import POLL_SECONDS, open_webhook_thread
from api import import_file, logs, representations, server
from api.bootstrap import bootstrap, build_app, close_app
from api.context import EXTENSION
from api.progress import ProgressLine, events_bar
from api.scheduler import INTERVAL_SECONDS, Scheduler
from domain.ledger import Ledger


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "needs_settings", True):
        offline: int = args.run(args, None)
        return offline
    try:
        settings = Settings.from_environ()
    except ConfigurationError as error:
        parser.exit(2, f"daifuku: configuration error: {error}\n")
    code: int = args.run(args, settings)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daifuku",
        description="Event-sourced loyalty ledger. The database comes from DAIFUKU_DATABASE_URL "
        "(default: SQLite file var/daifuku.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create an API key and print it once")
    create.add_argument("--role", required=True, choices=KEY_ROLES)
    create.add_argument("--name", help="who the key is for (default: the role)")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in-days", type=_days, metavar="DAYS", help="the key stops working then"
    )
    expiry.add_argument(
        "--expires-at", type=_instant, metavar="TIME", help="RFC 3339 with an offset"
    )
    create.set_defaults(run=_create_key)
    listing = key_commands.add_parser("list", help="every key with its state; never a secret")
    listing.set_defaults(run=_list_keys)
    revoke = key_commands.add_parser(
        "revoke", help="refuse a key from now on (every server process within a second)"
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="as `daifuku keys list` shows it")
    revoke.set_defaults(run=_revoke_key)
    rotate = key_commands.add_parser(
        "rotate", help="a new key with the same name, role and expiry; the old one is revoked"
    )
    rotate.add_argument("key_id", metavar="KEY_ID", help="as `daifuku keys list` shows it")
    rotate.set_defaults(run=_rotate_key)

    serve = commands.add_parser(
        "serve", help="serve the HTTP API with gunicorn, with the scheduler and projection worker"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=_count,
        metavar="N",
        help=f"server processes (default: {server.SQLITE_WORKERS} on SQLite; on PostgreSQL one per "
        "core, 2 to 3)",
    )
    serve.add_argument(
        "--threads",
        type=_count,
        default=server.THREADS,
        metavar="N",
        help=f"threads per process (default: {server.THREADS})",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="werkzeug's development server instead, restarted when a source file changes",
    )
    serve.set_defaults(run=_serve)

    scheduler = commands.add_parser("scheduler", help="record time-driven changes that are due")
    scheduler.add_argument("--once", action="store_true", help="one pass, then exit")
    scheduler.add_argument(
        "--interval", type=float, default=INTERVAL_SECONDS, help="seconds between passes"
    )
    scheduler.set_defaults(run=_schedule)

    project = commands.add_parser(
        "project", help="keep the read models up to date until Ctrl-C (resumes where it stopped)"
    )
    project.add_argument(
        "--poll", type=float, default=0.2, help="seconds between looks at the log when idle"
    )
    project.set_defaults(run=_project)

    hooks = commands.add_parser(
        "webhooks",
        help="deliver webhooks until Ctrl-C (resumes where it stopped; `serve` runs it too)",
    )
    hooks.add_argument(
        "--poll",
        type=float,
        default=POLL_SECONDS,
        help="seconds between looks at the log once caught up",
    )
    hooks.set_defaults(run=_webhooks)

    follow = commands.add_parser(
        "followups",
        help="start the follow-ups the plans call for and keep their effect's read models, "
        "until Ctrl-C (resumes where it stopped; `serve` runs it too unless "
        "DAIFUKU_FOLLOWUPS=off)",
    )
    follow.add_argument("--once", action="store_true", help="catch up with the log, then exit")
    follow.add_argument(
        "--poll",
        type=float,
        default=FOLLOWUP_POLL_SECONDS,
        help="seconds between looks at the log once caught up",
    )
    follow.set_defaults(run=_followups)

    import_file.add_parser(commands)

    rebuild = commands.add_parser("replay", help="delete the read models and rebuild them")
    rebuild.set_defaults(run=_replay)

    audit = commands.add_parser("audit", help="export the ledger and verify exports")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    export = audit_commands.add_parser("export", help="write the hash-chained JSON Lines export")
    export.add_argument("file", nargs="?", help="where to write it (default: standard output)")
    export.set_defaults(run=_export)
    verify = audit_commands.add_parser(
        "verify-export", help="recompute an export's hash chain offline; say where it breaks"
    )
    verify.add_argument("file", help="an export written by GET /v1/audit/export")
    verify.set_defaults(run=_verify_export, needs_settings=False)
    check = audit_commands.add_parser(
        "verify",
        help="replay the history into fresh read models and compare with the live ones "
        "(exit 1: differences, 2: the verification could not finish)",
    )
    check.set_defaults(run=_verify_views)
    return parser


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError("give 1-256")
    return count


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError("give 1-36500 days")
    return days


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2027-01-01T00:00:00+00:00")
    return moment


@contextmanager
def _key_store(settings: Settings) -> Iterator[KeyStore]:
    keys = KeyStore(settings.database)
    try:
        yield keys
    finally:
        keys.close()


def _refuse(error: Exception) -> int:
    print(f"daifuku: {error}", file=sys.stderr)
    if isinstance(error, UnknownKey):
        print("daifuku: `daifuku keys list` shows the ids", file=sys.stderr)
    return 2 if isinstance(error, ValueError) else 1


def _create_key(args: argparse.Namespace, settings: Settings) -> int:
    name = args.name or args.role
    with _key_store(settings) as keys:
        expires_at = args.expires_at
        if args.expires_in_days is not None:
            expires_at = keys.now() + timedelta(days=args.expires_in_days)
        try:
            key, secret = keys.issue(args.role, name, expires_at)
        except ValueError as error:
            return _refuse(error)
    until = f", expiring {_when(key.expires_at)}" if key.expires_at else ""
    print(
        f"Created {args.role} key {name!r} ({key.key_id}{until}) in "
        f"{settings.database.describe()}; it is shown once:"
    )
    print(secret)
    return 0


def _list_keys(args: argparse.Namespace, settings: Settings) -> int:
    with _key_store(settings) as keys:
        now = keys.now()
        found = keys.page(limit=1_000_000)
    columns = ("id", "name", "role", "state", "created", "last used", "expires", "revoked")
    rows = [
        (
            key.key_id,
            key.name,
            key.role,
            key.state(now),
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.expires_at),
            _when(key.revoked_at),
        )
        for key in found
    ]
    widths = [max(len(row[n]) for row in [columns, *rows]) for n in range(len(columns))]
    for row in [columns, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if not rows:
        print(f"(no keys yet in {settings.database.describe()})")
    return 0


def _revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    with _key_store(settings) as keys:
        try:
            key = keys.revoke(args.key_id)
        except (UnknownKey, LastAdminKey) as error:
            return _refuse(error)
    print(
        f"Revoked {key.role} key {key.name!r} ({key.key_id}) at {_when(key.revoked_at)}; "
        "every server refuses it within a second."
    )
    return 0


def _rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    with _key_store(settings) as keys:
        try:
            new, secret, old = keys.rotate(args.key_id)
        except (UnknownKey, KeyNotRotatable) as error:
            return _refuse(error)
    print(
        f"Rotated {old.role} key {old.name!r}: {old.key_id} is revoked (every server refuses "
        f"it within a second); its replacement {new.key_id} is shown once:"
    )
    print(secret)
    return 0


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    logs.configure(settings.log_format)
    if args.dev:
        return _serve_dev(args, settings)
    _prepare(settings)
    workers = args.workers or server.default_workers(settings)
    print(f"Serving with gunicorn: {workers} x {args.threads} threads", flush=True)
    return server.serve(settings, args.host, args.port, workers, args.threads)


def _prepare(settings: Settings) -> None:
    """Create the schema and, on first start, one key per role; print what is served. Every
    connection is closed again: gunicorn's master forks the workers next."""
    app, _, keys = build_app(settings)
    try:
        if keys.count() == 0:
            print("No API keys yet; one per role (shown only now):", flush=True)
            for role in KEY_ROLES:
                print(f"  {role:<10} {keys.create(role, role)}", flush=True)
        views = app.extensions[EXTENSION].views
    finally:
        close_app(app)
    print(f"Ledger: {settings.database.describe()}", flush=True)
    reads = "the read models (kept up to date in the background)" if views else "the ledger"
    print(f"Reads: from {reads}", flush=True)


def _serve_dev(args: argparse.Namespace, settings: Settings) -> int:
    """werkzeug's development server, restarted when a source file changes: werkzeug runs this
    command again in a child process, which serves; this one only watches."""
    if not is_running_from_reloader():
        _prepare(settings)
        run_simple(args.host, args.port, _watcher, use_reloader=True, threaded=True)
        return 0
    app, ledger, _ = build_app(settings)
    views = app.extensions[EXTENSION].views
    scheduler = Scheduler(ledger, app.extensions[EXTENSION].metrics).start()
    projector = None
    if views is not None:
        projector = ProjectionThread(ledger, views, representations).start()
    try:
        with socket.socket(fileno=os.dup(int(os.environ["WERKZEUG_SERVER_FD"]))) as bound:
            port = bound.getsockname()[1]
        print(f"Listening on http://{args.host}:{port} (docs at /docs; reloads)", flush=True)
        run_simple(args.host, args.port, app, use_reloader=True, threaded=True)
    finally:
        if projector is not None:
            projector.stop()
        scheduler.stop()
        close_app(app)
    return 0


def _watcher(environ: Any, start_response: Any) -> Any:
    raise AssertionError("the watching process serves nothing; its child does")


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    ledger, keys, _ = bootstrap(settings)
    try:
        if args.once:
            print(f"Recorded {ledger.record_due()} time-driven events.")
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        signal.signal(signal.SIGTERM, _interrupt)
        scheduler = Scheduler(ledger, interval=args.interval)
        print(f"Recording time-driven changes every {args.interval:g} s; Ctrl-C stops.", flush=True)
        try:
            while True:
                scheduler.run_once()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            print("Stopping.", flush=True)
    finally:
        ledger.close()
        keys.close()
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    ledger, keys, _ = bootstrap(settings)
    try:
        lines = export_lines(
            lambda after, limit: ledger.event_log(after=after, limit=limit), ledger.clock.now()
        )
        with (
            open(args.file, "w", encoding="utf-8") if args.file else nullcontext(sys.stdout) as out
        ):
            for line in lines:
                out.write(line + "\n")
    finally:
        ledger.close()
        keys.close()
    return 0


def _verify_export(args: argparse.Namespace, settings: Settings | None) -> int:
    try:
        with open(args.file, encoding="utf-8") as lines:
            result = verify_lines(lines)
    except OSError as error:
        print(f"daifuku: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"OK: {result.events} events, head sha256 {result.head_sha256}")
        return 0
    print(f"BROKEN at line {result.broken_at}: {result.reason} ({result.events} events before it)")
    return 1


@contextmanager
def _ledger_and_views(settings: Settings) -> Iterator[tuple[Ledger, MemberStatusView]]:
    """The ledger and the read models of the configured store, closed on the way out."""
    ledger, keys, _ = bootstrap(settings)
    try:
        view = open_member_status_view(ledger.env)
        try:
            yield ledger, view
        finally:
            view.close()
    finally:
        ledger.close()
        keys.close()


def _project(args: argparse.Namespace, settings: Settings) -> int:
    progress = ProgressLine("member_status")
    with _ledger_and_views(settings) as (ledger, view):
        worker = ProjectionWorker(ledger, MemberStatusProjection(view, ledger, representations))
        signal.signal(signal.SIGTERM, _interrupt)
        print(
            f"Projecting {settings.database.describe()} from position {worker.position}; "
            "Ctrl-C stops.",
            flush=True,
        )
        try:
            worker.run(threading.Event(), poll_seconds=args.poll, progress=progress)
        except KeyboardInterrupt:
            progress.finish()
            print(f"Stopping at position {worker.position}.", flush=True)
    return 0


def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ledger, keys, _ = bootstrap(settings)
    try:
        worker = open_webhook_thread(
            ledger,
            settings.database,
            settings.webhooks_allow_private,
            retention_days=settings.webhooks_retention_days,
        )
        worker.poll_seconds = args.poll
        signal.signal(signal.SIGTERM, _interrupt)
        print(f"Delivering webhooks from {settings.database.describe()}; Ctrl-C stops.", flush=True)
        _run_until_interrupted(worker)
    finally:
        ledger.close()
        keys.close()
    return 0


def _followups(args: argparse.Namespace, settings: Settings) -> int:
    """The follow-up process on its own (beside `serve` with DAIFUKU_FOLLOWUPS=off, say, so
    that it has a core of its own): one catch-up with ``--once``, else until Ctrl-C."""
    ledger, keys, _ = bootstrap(settings)
    try:
        if args.once:
            tables = FollowupTables.open(settings.database)
            try:
                process = FollowupProcess(ledger, tables)
                since = process.position
                read = catch_up_once(process, ledger.recorder.max_notification_id() or 0)
            except RuntimeError as error:  # another follow-up process wrote meanwhile
                print(f"Stopped: {error}. Is another follow-up process running?", file=sys.stderr)
                return 1
            finally:
                tables.close()
            print(
                f"Read {read} events from position {since} to {process.position}; "
                f"started {process.started} follow-ups."
            )
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        worker = open_followup_thread(ledger, settings.database)
        worker.poll_seconds = args.poll
        signal.signal(signal.SIGTERM, _interrupt)
        print(f"Following {settings.database.describe()} for follow-ups; Ctrl-C stops.", flush=True)
        _run_until_interrupted(worker)
    finally:
        ledger.close()
        keys.close()
    return 0


def _run_until_interrupted(worker: BackgroundLoop) -> None:
    """Start a background loop and keep it running until Ctrl-C (or SIGTERM), then stop it."""
    worker.start()
    try:
        while worker.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("Stopping.", flush=True)
    finally:
        worker.stop()


def catch_up_once(process: FollowupProcess, head: int) -> int:
    """Read to ``head`` (the log's head when the command started), then once more for what
    the last passes started: a command that ends under live traffic. How many events."""
    read = 0
    past_head = False
    while True:
        started = process.started
        found = process.catch_up()
        read += found
        if found == 0 or past_head or (process.position >= head and process.started == started):
            return read
        past_head = process.position >= head


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    progress = ProgressLine("member_status")
    with _ledger_and_views(settings) as (ledger, view):
        started = time.monotonic()
        events = replay(ledger, view, representations, progress)
        progress.finish()
        seconds = time.monotonic() - started
        rate = events / seconds if seconds > 0 else 0.0
        print(f"Replayed {events} events into member_status in {seconds:.1f} s ({rate:,.0f}/s).")
    return 0


def _verify_views(args: argparse.Namespace, settings: Settings) -> int:
    """Run a verification job here (or follow the one a server runs) with a progress bar;
    0: no difference, 1: differences, 2: the job failed or was interrupted."""
    ledger, keys, _ = bootstrap(settings)
    jobs = VerificationJobs.on_database(settings.database, ledger, representations, ledger.clock)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        job, started_here = jobs.start()
        if not started_here:
            print(f"Following verification {job.id}, running since {job.started_at}.")
        with events_bar("verify") as progress:
            while job.status == RUNNING:
                if job.events_total is not None:  # known once the replay has begun
                    progress(job.events_done, job.events_total)
                job = jobs.wait(job.id, timeout=0.5) or job
            progress(job.events_done, job.events_total or job.events_done)
    except ValueError as error:
        return _refuse(error)
    except KeyboardInterrupt:
        print("Stopping: the verification ends as interrupted.", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        jobs.close()
        ledger.close()
        keys.close()
    if job.result is None:
        print(f"daifuku: verification {job.id} {job.status}: {job.error}", file=sys.stderr)
        return 2
    result = job.result
    if result["position"] is None:
        print("The live member_status view was never built (run daifuku project).")
    for mismatch in result["mismatches"]:
        print(
            f"MISMATCH {mismatch['member_id']} {mismatch['field']}: "
            f"live {mismatch['live']!r}, replayed {mismatch['replayed']!r}"
        )
    count = len(result["mismatches"])
    verdict = "OK" if not count else f"{count} mismatches"
    print(f"{verdict}: {result['events']} events replayed, {result['members']} members compared.")
    return 0 if not count else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
