"""The report: pass or fail per target, the table on stdout and the JSON results."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT

TARGETS: dict[str, tuple[str, float]] = {
    "purchases_per_s": (">=", 400.0),
    "ratio": (">=", 0.25),
    "import_ratio": (">=", 0.5),
    "status_read_p99_ms": ("<=", 20.0),
    "long_history_ratio": ("<=", 1.5),
    "peak_rss_mb": ("<", 300.0),
    "replay_events_per_s": (">=", 5000.0),
    "replay_ratio": (">=", 0.2),
    "worker_lag_p99_s": ("<=", 1.0),
}

SKIPPED_MEMORY = "not measured (--no-memory-phase)"
SKIPPED_REPLAY = "not measured (--no-replay-phase)"
SKIPPED_LAG = "not measured (--no-worker-lag)"
SKIPPED_IMPORT = "not measured (--no-import-phase)"


def verdicts(figures: dict[str, Any], skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Pass or fail per target; ``skipped`` names the targets whose phase was skipped."""
    out = {}
    for name, (op, target) in TARGETS.items():
        value = figures.get(name)
        if name in skipped:
            verdict = skipped[name]
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            verdict = "not measured"
        else:
            passed = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
            verdict = "pass" if passed else "FAIL"
        out[name] = {"value": value, "target": f"{op} {target:g}", "verdict": verdict}
    return out


def print_table(figures: dict[str, Any], checks: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("purchases/s (8 clients)", "purchases_per_s"),
        ("purchase p50 ms", "purchase_p50_ms"),
        ("purchase p99 ms", "purchase_p99_ms"),
        ("raw INSERT+COMMIT/s", "raw_inserts_per_s"),
        ("ratio purchases/raw", "ratio"),
        ("raw locked INSERT+COMMIT/s", "raw_locked_inserts_per_s"),
        ("import purchases/s", "import_purchases_per_s"),
        ("import records/s", "import_records_per_s"),
        ("import seconds", "import_seconds"),
        ("import records rejected", "import_rejected"),
        ("ratio import purchases/raw", "import_ratio"),
        ("status read p99 ms (under load)", "status_read_p99_ms"),
        ("long-history purchase median ms", "long_purchase_median_ms"),
        ("new-member purchase median ms", "new_purchase_median_ms"),
        ("long-history ratio", "long_history_ratio"),
        ("peak RSS MiB (gunicorn workers)", "peak_rss_mb"),
        ("memory phase seconds", "memory_phase_seconds"),
        ("worker lag p50 s (under load)", "worker_lag_p50_s"),
        ("worker lag p99 s (under load)", "worker_lag_p99_s"),
        ("events replayed", "replay_events"),
        ("replay events/s", "replay_events_per_s"),
        ("raw scan rows/s", "raw_scan_rows_per_s"),
        ("ratio replay/raw scan", "replay_ratio"),
    ]
    print()
    print(f"{'metric':<34} {'value':>12}  {'target':<10} verdict")
    print("-" * 72)
    for label, name in rows:
        value = figures.get(name)
        shown = (
            "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        )
        check = checks.get(name, {})
        print(f"{label:<34} {shown:>12}  {check.get('target', ''):<10} {check.get('verdict', '')}")
    print()


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def source_digest() -> str:
    """SHA-256 (12 hex) of the code the server runs: domain/, adapters/ and api/ as on disk."""
    digest = hashlib.sha256()
    for path in sorted(p for d in ("domain", "adapters", "api") for p in (ROOT / d).glob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def skipped_targets(args: argparse.Namespace) -> dict[str, str]:
    """The targets whose phase the options skipped, and what the report says instead."""
    skipped: dict[str, str] = {}
    if not args.memory_phase:
        skipped["peak_rss_mb"] = SKIPPED_MEMORY
    if not args.replay_phase:
        skipped["replay_events_per_s"] = skipped["replay_ratio"] = SKIPPED_REPLAY
    if not args.worker_lag:
        skipped["worker_lag_p99_s"] = SKIPPED_LAG
    if not args.import_phase:
        skipped["import_ratio"] = SKIPPED_IMPORT
    return skipped


def results(
    figures: dict[str, Any],
    phases: dict[str, Any],
    config: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    skipped: dict[str, str],
) -> dict[str, Any]:
    """What results.json holds: the targeted figures first, then every figure and phase."""
    checks = verdicts(figures, skipped)
    return {
        "purchases_per_s": figures.get("purchases_per_s"),
        "purchase_p50_ms": figures.get("purchase_p50_ms"),
        "purchase_p99_ms": figures.get("purchase_p99_ms"),
        "raw_inserts_per_s": figures.get("raw_inserts_per_s"),
        "ratio": figures.get("ratio"),
        "import_purchases_per_s": figures.get("import_purchases_per_s"),
        "import_ratio": figures.get("import_ratio"),
        "status_read_p99_ms": figures.get("status_read_p99_ms"),
        "long_history_ratio": figures.get("long_history_ratio"),
        "peak_rss_mb": figures.get("peak_rss_mb"),
        "replay_events_per_s": figures.get("replay_events_per_s"),
        "replay_ratio": figures.get("replay_ratio"),
        "worker_lag_p99_s": figures.get("worker_lag_p99_s"),
        "targets": checks,
        "passed": all(c["verdict"] == "pass" or c["verdict"] in skipped.values()
                      for c in checks.values()),
        "figures": figures,
        "phases": phases,
        "config": config,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "seconds": round((finished_at - started_at).total_seconds(), 1),
    }  # fmt: skip


def write_results(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
