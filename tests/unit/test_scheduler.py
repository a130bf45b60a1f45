"""The background scheduler: a pass every interval, a failed pass does not stop it."""

from __future__ import annotations

import threading
import time
from typing import Any

from api.metrics import Metrics
from api.scheduler import Scheduler
from tests.scrapes import value


class FlakyLedger:
    """record_due fails on its first call, then records 2 events a pass."""

    def __init__(self) -> None:
        self.calls = 0
        self.third_pass = threading.Event()

    def record_due(self) -> int:
        self.calls += 1
        if self.calls >= 3:
            self.third_pass.set()
        if self.calls == 1:
            raise RuntimeError("database hiccup")
        return 2


def test_the_scheduler_keeps_running_after_a_failed_pass_and_stops_when_told() -> None:
    ledger = FlakyLedger()
    metrics = Metrics()
    ledger_any: Any = ledger
    scheduler = Scheduler(ledger_any, metrics, interval=0.01).start()
    try:
        assert ledger.third_pass.wait(5.0)
    finally:
        scheduler.stop()
    assert not scheduler._thread.is_alive()
    calls = ledger.calls
    rendered = metrics.render()[0].decode()
    assert value(rendered, "daifuku_scheduler_runs_total") == calls
    assert value(rendered, "daifuku_scheduler_failures_total") == 1
    assert value(rendered, "daifuku_scheduler_events_recorded_total") == 2 * (calls - 1)
    last_run = value(rendered, "daifuku_scheduler_last_run_timestamp_seconds")
    assert last_run is not None and last_run > 0
    time.sleep(0.05)  # five intervals
    assert ledger.calls == calls  # nothing runs after stop
