"""Progress of a long command: one rewritten line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm


class ProgressLine:
    def __init__(self, label: str, out: TextIO | None = None, every_seconds: float = 2.0) -> None:
        self.label = label
        self.out = out or sys.stdout
        self.terminal = self.out.isatty()
        self.every_seconds = every_seconds if not self.terminal else 0.1
        self._last = 0.0
        self._pending = False

    def __call__(self, done: int, total: int, seconds: float) -> None:
        now = time.monotonic()
        if now - self._last < self.every_seconds and done < total:
            return
        self._last = now
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        text = f"{self.label}: {done}/{total} events, {rate:,.0f} events/s, ETA {eta:,.0f} s"
        if self.terminal:
            width = 30
            filled = width * done // total if total else width
            self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
            self._pending = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self._pending:
            self.out.write("\n")
            self.out.flush()
            self._pending = False


@contextmanager
def events_bar(label: str, out: TextIO | None = None) -> Iterator[Callable[[int, int], None]]:
    """``update(done, total)``: a tqdm bar with rate and ETA on a terminal, else a plain line
    every few seconds (``ProgressLine``)."""
    out = out or sys.stderr
    if not out.isatty():
        line = ProgressLine(label, out)
        started = time.monotonic()
        yield lambda done, total: line(done, total, time.monotonic() - started)
        line.finish()
        return
    bar: tqdm[Any] = tqdm(desc=label, unit="events", unit_scale=True, file=out)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
