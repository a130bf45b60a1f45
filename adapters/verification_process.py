"""A verification run in a process of its own, so that the replay stays out of the server's.

A replay of the whole history builds hundreds of thousands of objects: in the process that
answers requests, each full garbage collection of them paused every request thread (up to
0.6 s, a dozen times in a 54,000-event job). Here the replay runs in a child (spawned: the
server has threads, and a fork would copy only one of them) with a ledger of its own on the
same store; the parent's thread only relays its progress and takes its answer. The child reads
and never writes the store (the scratch views are a temporary file), so killing it is safe.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

from adapters.projections import ProgressReport, Shapes
from adapters.verification import Verification, VerificationStopped, verify_member_status
from adapters.views import MemberStatusView, open_member_status_view
from domain.ledger import Ledger

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2


def separable(env: Mapping[str, str]) -> bool:
    """Whether another process can open this store (not an in-memory SQLite database)."""
    name = env.get("SQLITE_DBNAME", "")
    return (
        env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres"
        or bool(name)
        and (":memory:" not in name and "mode=memory" not in name)
    )


def verify_in_child(
    ledger: Ledger,
    live: MemberStatusView,
    shapes: Shapes,
    progress: ProgressReport | None = None,
    stop: threading.Event | None = None,
) -> Verification:
    """``verify_member_status`` in a child process (in this one where no other process can
    open the store, or the shapes are not a module the child can import)."""
    if not separable(ledger.env) or not isinstance(shapes, ModuleType):
        return verify_member_status(ledger, live, shapes, progress, stop)
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(
        target=_replay,
        args=(dict(ledger.env), shapes.__name__, sending),
        name="daifuku-verification",
        daemon=True,
    )
    child.start()
    sending.close()
    try:
        while True:
            if stop is not None and stop.is_set():
                raise VerificationStopped("stopped while the replay ran")
            if not receiving.poll(POLL_SECONDS):
                if not child.is_alive() and not receiving.poll(0):
                    raise RuntimeError(f"the verification process ended ({child.exitcode})")
                continue
            try:
                message: tuple[Any, ...] = receiving.recv()
            except EOFError:
                raise RuntimeError(f"the verification process ended ({child.exitcode})") from None
            kind = message[0]
            if kind == "progress" and progress is not None:
                progress(*message[1:])
            elif kind == "done":
                result: Verification = message[1]
                return result
            elif kind == "failed":
                raise RuntimeError(message[1])
    finally:
        receiving.close()
        if child.is_alive():
            child.terminate()
        child.join(5)


def _replay(env: dict[str, str], shapes_module: str, sending: Connection) -> None:
    """In the child: the replay and the comparison, its progress and answer sent back."""
    try:
        shapes: Any = importlib.import_module(shapes_module)
        ledger = Ledger(env=env)  # reads and replays; never enrols, so no personal-data keys
        live = open_member_status_view(env)
        try:

            def report(done: int, total: int, seconds: float) -> None:
                sending.send(("progress", done, total, seconds))

            sending.send(("done", verify_member_status(ledger, live, shapes, report)))
        finally:
            live.close()
            ledger.close()
    except BrokenPipeError:  # the parent is gone: nobody waits for the answer
        pass
    except Exception as error:
        sending.send(("failed", f"{type(error).__name__}: {error}"))
    finally:
        sending.close()
