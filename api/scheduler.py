"""Records time-driven changes (lots maturing or expiring, tier reviews) in the background."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from adapters.background import BackgroundLoop
from api.metrics import Metrics

if TYPE_CHECKING:
    from domain.ledger import Ledger

INTERVAL_SECONDS = 60.0
log = logging.getLogger(__name__)


class Scheduler(BackgroundLoop):
    """A daemon thread calling ``ledger.record_due()`` every interval until stopped."""

    thread_name = "daifuku-scheduler"

    def __init__(
        self, ledger: Ledger, metrics: Metrics | None = None, interval: float = INTERVAL_SECONDS
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._interval = interval
        super().__init__()

    def run_once(self) -> int:
        try:
            recorded = self._ledger.record_due()
        except Exception:
            # One bad pass must not kill the thread; the next pass retries everything still due.
            log.exception("scheduler pass failed")
            if self._metrics is not None:
                self._metrics.scheduler_ran(0, failed=True)
            return 0
        if self._metrics is not None:
            self._metrics.scheduler_ran(recorded)
        if recorded:
            log.info("scheduler recorded %d time-driven events", recorded)
        return recorded

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self._stopping.wait(self._interval)
