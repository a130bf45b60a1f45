"""Writes take turns within a server process; reads never queue behind them.

Every write ends in the event store's table lock, which lets one transaction in at a time for
the whole database, and a Python process runs one thread at a time. Writes running side by side
in one process therefore mostly wait for each other, and while they wait they hold the
interpreter lock for their parsing and serialising, which is what a status read then queues
behind. So a process lets ``DAIFUKU_WRITE_CONCURRENCY`` writes (default 1) run at once and
holds the others back before they start; reads are not counted.

Measured on the 2-core bench machine (2 workers x 8 threads, 8 purchase clients, 20-second
runs, 2026-11-30; the machine's own speed varied by a third from run to run), with status
reads of one statement each (adapters/views.py): 1 gave 429-501 purchases/s and a status read
p99 of 12-14 ms; 2 gave 512-546 purchases/s and 14-23 ms. Before reads were one statement,
no limit gave 360-540 purchases/s and 33-62 ms. 1 is the default: a write per process keeps
status reads within 20 ms under a saturating load. Raise it when the database is further away
than loopback, so that one write's round trips overlap another's work. A write waiting for its
turn still occupies one of the server's threads: give each worker more threads than the writes
it is expected to hold at once (gunicorn ``--threads``), or reads wait for a free thread.
"""

from __future__ import annotations

import threading

from flask import Flask, g, request

from api.problems import SERVER_BUSY, Problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that record nothing: a long verification must not hold up the writes behind it, and
# minting a member token only signs one.
NOT_WRITES = frozenset({"audit_verification.verify", "members.mint_token"})
WAIT_SECONDS = 30.0


def limit_writes(app: Flask, concurrency: int | None) -> None:
    """Let at most ``concurrency`` writes of this process run at once (None: no limit).

    Registered after authentication, so a refused request never takes a turn."""
    if concurrency is None:
        return
    turns = threading.BoundedSemaphore(concurrency)

    @app.before_request
    def take_turn() -> None:
        if request.method in SAFE_METHODS or request.endpoint in NOT_WRITES:
            return
        if request.endpoint is None:  # no such route (404 or 405): nothing to write
            return
        # The body is read before the turn is taken, so a client that sends it slowly holds
        # up only its own request (the server's body limit still applies).
        request.get_data(cache=True)
        if not turns.acquire(timeout=WAIT_SECONDS):
            raise Problem(
                SERVER_BUSY,
                f"this server has had a write queued for {WAIT_SECONDS:g} s; try again shortly",
                headers={"Retry-After": "1"},
            )
        g.write_turn = True

    @app.teardown_request
    def end_turn(_: BaseException | None) -> None:
        if g.pop("write_turn", False):
            turns.release()
