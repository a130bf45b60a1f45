"""Percentiles and the measured window of the clients' timings."""

from __future__ import annotations

import math
from typing import Any


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def in_window(result: dict[str, Any], start: float, end: float) -> list[float]:
    return [
        lat
        for s, lat in zip(result["starts"], result["latencies"], strict=True)
        if start <= s < end
    ]


def completed_in_window(result: dict[str, Any], start: float, end: float) -> int:
    return sum(
        1
        for s, lat in zip(result["starts"], result["latencies"], strict=True)
        if start <= s + lat < end
    )


def cpu_ms(cpu_seconds: float, requests: int) -> float:
    """Milliseconds of CPU per request (NaN without a request)."""
    return round(cpu_seconds * 1000 / requests, 3) if requests else math.nan
