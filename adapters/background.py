"""A daemon thread that runs a loop until it is told to stop (the server's background work)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Self


class BackgroundLoop(ABC):
    """Runs ``_run`` in a daemon thread named ``thread_name``; ``_run`` returns once
    ``_stopping`` is set, and ``stop`` sets it and waits for the thread."""

    thread_name = "daifuku-background"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        """Tell the loop to end, without waiting for it (``stop`` waits)."""
        self._stopping.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @abstractmethod
    def _run(self) -> None:
        """The thread's work: loops until ``_stopping`` is set."""
