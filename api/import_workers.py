"""A large import on several cores: members split between worker processes.

The plan groups the records by member (members linked by referrals in one group); groups
share nothing, so each worker process applies its own groups, in the plan's order, with its
own ledger and transactions, while the others do the same. The store keeps the guarantees
it keeps for concurrent requests: a member's version and every order, refund and redemption
id are unique whichever process writes them, so two workers (or a worker and the live
storefront) never record anything twice.

Planning reads each line only as far as it needs (kind, ids, time: ``imports.sketch``); the
workers parse their lines with the single requests' schemas and say why a line is rejected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from typing import Any

from adapters.import_rejections import TableRejections
from adapters.settings import Settings
from api import imports
from api.bootstrap import bootstrap
from api.imports import Report, Result
from domain.imports import Record, plan

DONE = "done"
PR_SET_PDEATHSIG = 1


class WorkerFailed(Exception):
    """A worker process met an error it could not go on after (the store went away...)."""


def run(
    settings: Settings,
    lines: list[str],
    name: str,
    batch_size: int,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Report, list[Result]]:
    """Import ``lines`` with ``workers`` processes (1: in this one)."""
    digest = imports.digest_of(lines)
    if workers <= 1:
        ledger, keys, _ = bootstrap(settings)
        rejections = TableRejections(settings.database)
        try:
            return imports.run(
                ledger,
                lines,
                name,
                batch_size=batch_size,
                progress=progress,
                rejections=rejections,
                digest=digest,
            )
        finally:
            rejections.close()
            ledger.close()
            keys.close()
    started = time.monotonic()
    shares, read = _shares(settings, lines, workers)
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    processes = [
        context.Process(
            target=work,
            args=(
                [(line, lines[line - 1]) for line in share],
                name,
                digest,
                batch_size,
                results,
                os.getpid(),
            ),
            name=f"daifuku-import-{number}",
            daemon=True,
        )
        for number, share in enumerate(shares)
        if share
    ]
    total = sum(len(share) for share in shares)
    found: list[Result] = []
    if progress is not None:
        progress(0, total)
    try:
        for process in processes:
            process.start()
        running = len(processes)
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    raise WorkerFailed("an import worker stopped without a word") from None
                continue
            if message == DONE:
                running -= 1
                continue
            if isinstance(message, str):
                raise WorkerFailed(message)
            found.extend(Result(*fields) for fields in message)
            if progress is not None:
                progress(len(found), total)
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    return Report.of(name, read, started, found), found


def _shares(settings: Settings, lines: list[str], workers: int) -> tuple[list[list[int]], int]:
    """The lines each worker applies, in the plan's order: whole groups, balanced by count."""
    sketches: list[Record] = []
    unplaced: list[int] = []
    read = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        read += 1
        found = imports.sketch(number, text)
        if found is None:
            unplaced.append(number)
        else:
            sketches.append(found)
    if read and not sketches:
        imports.parse_lines(lines)  # raises NotJsonLines when it is not an import at all
    ledger, keys, _ = bootstrap(settings)
    try:
        planned, unknown = plan(sketches, imports.order_owner(ledger), imports.referrer_of(ledger))
    finally:
        ledger.close()
        keys.close()
    groups: dict[str, list[int]] = {}
    for record in planned:
        assert record.group is not None
        groups.setdefault(record.group, []).append(record.line)
    shares: list[list[int]] = [[] for _ in range(workers)]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    # A line planning could not place is parsed by a worker, which says why it is rejected.
    shares[0].extend(unplaced)
    shares[0].extend(outcome.line for outcome in unknown)
    return shares, read


def work(
    lines: list[tuple[int, str]],
    name: str,
    digest: str,
    batch_size: int,
    results: Any,
    parent: int,
) -> None:
    """A worker: its lines parsed, planned again (the same order), applied in batches."""
    _die_with(parent)
    try:
        settings = Settings.from_environ()
        ledger, keys, _ = bootstrap(settings)
        rejections = TableRejections(settings.database)
        try:
            records: list[Record] = []
            rejected: list[Result] = []
            for number, text in lines:
                found = imports.parse(number, text)
                if isinstance(found, Record):
                    records.append(found)
                else:
                    rejected.append(found)
            results.put([_fields(r) for r in rejected])
            for found_results in imports.apply_records(
                ledger, records, name, digest, rejections, batch_size=batch_size
            ):
                results.put([_fields(r) for r in found_results])
                if os.getppid() != parent:
                    return  # the import was stopped: what is saved stays
        finally:
            rejections.close()
            ledger.close()
            keys.close()
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(f"an import worker failed: {error}")
    finally:
        results.put(DONE)


def _die_with(parent: int) -> None:
    """A worker stops at once when the import's process dies, SIGKILL included (Linux: the
    kernel sends it SIGKILL too); elsewhere it stops after its batch in hand."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the import died while this worker was starting
        os._exit(1)


def _fields(result: Result) -> tuple[Any, ...]:
    return (result.line, result.status, result.kind, result.id, result.problem)
