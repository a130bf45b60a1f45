"""Request counters and latency histograms in the Prometheus text format (one set per process)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HISTOGRAM = "daifuku_http_request_duration_seconds"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._in_flight = 0
        self._started = time.time()
        self._scheduler_runs = 0
        self._scheduler_events = 0
        self._scheduler_failures = 0
        self._scheduler_last_run = 0.0

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._requests[(method, endpoint, str(status))] += 1
            key = (method, endpoint)
            counts = self._buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[key] += seconds

    def scheduler_ran(self, events: int, failed: bool = False) -> None:
        with self._lock:
            self._scheduler_runs += 1
            self._scheduler_events += events
            self._scheduler_failures += int(failed)
            self._scheduler_last_run = time.time()

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP daifuku_http_requests_total HTTP requests by method, route and status.",
                "# TYPE daifuku_http_requests_total counter",
            ]
            for (method, endpoint, status), count in sorted(self._requests.items()):
                labels = _labels(method=method, endpoint=endpoint, status=status)
                lines.append(f"daifuku_http_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP daifuku_http_request_duration_seconds Time to answer a request.",
                "# TYPE daifuku_http_request_duration_seconds histogram",
            ]
            for (method, endpoint), counts in sorted(self._buckets.items()):
                base = _labels(method=method, endpoint=endpoint)
                bounds = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
                for bound, count in zip(bounds, counts, strict=True):
                    lines.append(f'{HISTOGRAM}_bucket{{{base},le="{bound}"}} {count}')
                total = self._sums[(method, endpoint)]
                lines.append(f"{HISTOGRAM}_sum{{{base}}} {total:.6f}")
                lines.append(f"{HISTOGRAM}_count{{{base}}} {counts[-1]}")
            lines += [
                "# HELP daifuku_http_requests_in_flight Requests being answered right now.",
                "# TYPE daifuku_http_requests_in_flight gauge",
                f"daifuku_http_requests_in_flight {self._in_flight}",
                "# HELP daifuku_process_start_time_seconds When this process started (Unix time).",
                "# TYPE daifuku_process_start_time_seconds gauge",
                f"daifuku_process_start_time_seconds {self._started:.3f}",
                "# HELP daifuku_scheduler_runs_total Scheduler passes in this process.",
                "# TYPE daifuku_scheduler_runs_total counter",
                f"daifuku_scheduler_runs_total {self._scheduler_runs}",
                "# HELP daifuku_scheduler_failures_total Scheduler passes that raised.",
                "# TYPE daifuku_scheduler_failures_total counter",
                f"daifuku_scheduler_failures_total {self._scheduler_failures}",
                "# HELP daifuku_scheduler_events_recorded_total Time-driven events recorded.",
                "# TYPE daifuku_scheduler_events_recorded_total counter",
                f"daifuku_scheduler_events_recorded_total {self._scheduler_events}",
                "# HELP daifuku_scheduler_last_run_timestamp_seconds Last scheduler pass.",
                "# TYPE daifuku_scheduler_last_run_timestamp_seconds gauge",
                f"daifuku_scheduler_last_run_timestamp_seconds {self._scheduler_last_run:.3f}",
            ]
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
