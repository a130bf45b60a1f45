"""``daifuku import FILE|-``: a history of any length, into the store or through a server.

Directly, the records are applied in batches, each in one transaction; with ``--url`` and
``--key``, the planned records are sent to ``POST /v1/imports`` in batches (each record with
its line in the file, so causes and reports name it). Either way the import is idempotent by
the records' ids: run again after Ctrl-C, a crash or a lost connection, it applies what is
missing and counts the rest as present.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import psycopg
from eventsourcing.persistence import PersistenceError
from tqdm import tqdm

from adapters.settings import Settings
from api import import_workers, imports
from api.imports import NotJsonLines, Report, Result
from api.schemas import ID_RE
from domain.errors import DomainError
from domain.imports import REJECTED, plan

NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def add_parser(commands: Any) -> None:
    command = commands.add_parser(
        "import",
        help="bring in a history from before Daifuku (JSON Lines: member, purchase, refund, "
        "redemption records)",
    )
    command.add_argument("file", help="the JSON Lines file, or - for standard input")
    command.add_argument(
        "--name", help="named in each event's cause import:NAME:LINE (default: the file's name)"
    )
    command.add_argument(
        "--batch", type=_positive, default=250, help="records per transaction (default 250)"
    )
    command.add_argument(
        "--rejects",
        type=Path,
        help="where the rejected lines go, with why (default: FILE.rejects.jsonl)",
    )
    command.add_argument(
        "--workers",
        type=_positive,
        help="processes applying members in parallel, directly into the store (default: 2 "
        "on PostgreSQL on a machine with 2 cores or more, 1 on SQLite)",
    )
    command.add_argument("--report-json", type=Path, help="also write the report as JSON here")
    command.add_argument("--url", help="import through this running server's POST /v1/imports")
    command.add_argument("--key", help="a storefront or admin API key, with --url")
    command.add_argument(
        "--lines-per-request",
        type=_positive,
        default=2000,
        help="records per POST with --url (at most 10,000; default 2,000)",
    )
    command.set_defaults(run=run_command)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    if (args.url is None) != (args.key is None):
        print("daifuku: --url and --key go together", file=sys.stderr)
        return 2
    if args.lines_per_request > imports.MAX_LINES:
        print(f"daifuku: --lines-per-request is at most {imports.MAX_LINES:,}", file=sys.stderr)
        return 2
    name = args.name or _default_name(args.file)
    if not ID_RE.match(name):
        print(f"daifuku: --name {name!r}: 1-64 characters of A-Za-z0-9._:-", file=sys.stderr)
        return 2
    try:
        lines = _read(args.file)
    except OSError as error:
        print(f"daifuku: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"daifuku: {args.file} is not UTF-8 text", file=sys.stderr)
        return 2
    try:
        with _progress(sys.stderr) as progress:
            if args.url is None:
                workers = args.workers or _default_workers(settings)
                report, results = import_workers.run(
                    settings, lines, name, args.batch, workers, progress
                )
            else:
                report, results = _through(args.url, args.key, lines, name, args, progress)
    except NotJsonLines as error:
        print(f"daifuku: {args.file}: {error}; nothing was imported", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "daifuku: interrupted; what was saved stays. Run the same command again to go on.",
            file=sys.stderr,
        )
        return 130
    except (
        _RequestFailed,
        import_workers.WorkerFailed,
        DomainError,
        PersistenceError,
        psycopg.Error,
        sqlite3.Error,
    ) as error:
        # A store that went away, or members changed by others faster than a batch can be
        # saved: what was saved stays, and the import goes on when run again.
        print(f"daifuku: {error}; run the same command again to go on", file=sys.stderr)
        return 1
    rejects = _write_rejects(args, results, lines)
    _print_report(report, rejects)
    if args.report_json is not None:
        args.report_json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 3 if report.total(REJECTED) else 0


def _default_name(file: str) -> str:
    if file == "-":
        return "stdin"
    stem = NAME_RE.sub("-", Path(file).stem).strip("-")
    return (stem or "import")[:64]


def _read(file: str) -> list[str]:
    if file == "-":
        return sys.stdin.read().splitlines()
    return Path(file).read_text(encoding="utf-8").splitlines()


def _default_workers(settings: Settings) -> int:
    if settings.database.kind == "sqlite":
        return 1  # one writer at a time: more processes would only wait for the lock
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class _RequestFailed(Exception):
    pass


def _through(
    url: str,
    key: str,
    lines: list[str],
    name: str,
    args: argparse.Namespace,
    progress: Callable[[int, int], None],
) -> tuple[Report, list[Result]]:
    """The file planned here (so batches follow the members' business time), then sent."""
    started = time.monotonic()
    records, results, read = imports.parse_lines(lines)
    # The server finds the members of refunds whose orders are in its store.
    planned, _ = plan(records, lambda order_id: "")
    digest = imports.digest_of(lines)
    endpoint = url.rstrip("/") + f"/v1/imports?name={name}&batch={args.batch}&digest={digest}"
    progress(0, len(planned))
    done = 0
    for start in range(0, len(planned), args.lines_per_request):
        chunk = planned[start : start + args.lines_per_request]
        body = "".join(
            json.dumps({**json.loads(lines[r.line - 1]), "line": r.line}) + "\n" for r in chunk
        )
        for found in _post(endpoint, key, body.encode()):
            results.append(
                Result(
                    found["line"],
                    found["status"],
                    found.get("kind"),
                    found.get("id"),
                    found.get("problem"),
                )
            )
        done += len(chunk)
        progress(done, len(planned))
    return Report.of(name, read, started, results), results


def _post(endpoint: str, key: str, body: bytes) -> Iterator[dict[str, Any]]:
    request = urllib.request.Request(
        endpoint,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": imports.MIMETYPE},
    )
    for attempt in range(5):
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                text = response.read().decode("utf-8")
            return (json.loads(line) for line in text.splitlines() if line.strip())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            if error.code == 503 and attempt < 4:
                time.sleep(1 + attempt)
                continue
            raise _RequestFailed(f"the server answered {error.code}: {detail[:500]}") from None
        except (urllib.error.URLError, OSError) as error:
            raise _RequestFailed(f"cannot reach {endpoint}: {error}") from None
    raise _RequestFailed("the server stayed busy")


def _write_rejects(
    args: argparse.Namespace, results: list[Result], lines: list[str]
) -> Path | None:
    rejected = [r for r in results if r.status == REJECTED]
    if not rejected:
        return None
    path: Path = args.rejects or Path(
        "import-stdin.rejects.jsonl" if args.file == "-" else args.file + ".rejects.jsonl"
    )
    with path.open("w", encoding="utf-8") as out:
        for result in rejected:
            text = lines[result.line - 1] if 0 < result.line <= len(lines) else None
            entry = {"line": result.line, "problem": result.problem, "text": text}
            out.write(json.dumps(entry) + "\n")
    return path


def _print_report(report: Report, rejects: Path | None) -> None:
    figures = report.to_dict()
    rate = figures["read"] / report.seconds if report.seconds > 0 else 0.0
    print(
        f"Import {report.name}: {figures['read']:,} records read, {figures['applied']:,} "
        f"applied, {figures['present']:,} already present, {figures['rejected']:,} rejected "
        f"in {report.seconds:,.1f} s ({rate:,.0f} records/s)."
    )
    for kind, counts in figures["by_kind"].items():
        print(
            f"  {kind:<10} {counts['applied']:>9,} applied {counts['present']:>9,} present "
            f"{counts['rejected']:>7,} rejected"
        )
    if rejects is not None:
        print(f"Rejected lines, with why: {rejects}")


@contextmanager
def _progress(out: TextIO) -> Iterator[Callable[[int, int], None]]:
    """A bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""
    if out.isatty():
        bar: tqdm[Any] | None = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="records", file=out, unit_scale=True)
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            if bar is not None:
                bar.close()
        return
    started = time.monotonic()
    last = 0.0

    def line(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 2.0 and 0 < done < total:
            return
        last = now
        seconds = now - started
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        out.write(f"import: {done:,}/{total:,} records, {rate:,.0f}/s, ETA {eta:,.0f} s\n")
        out.flush()

    yield line
