"""Progress of a long command: one rewritten line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
