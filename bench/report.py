"""The report: pass or fail per target, the table on stdout and the JSON results."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT

TARGETS: dict[str, tuple[str, float]] = {
    "purchases_per_s": (">=", 400.0),
    "ratio_to_ceiling": (">=", 0.3),
    "ratio_to_peer": (">=", 1.0),
    "status_read_p99_ms": ("<=", 20.0),
    "long_history_ratio": ("<=", 1.5),
    "peak_rss_mb": ("<", 300.0),
    "replay_events_per_s": (">=", 5000.0),
    "worker_lag_p99_s": ("<=", 1.0),
    "webhook_delivery_lag_p99_s": ("<=", 2.0),
    # Purchases/s with the dispatcher over without it (A-B-A): "within the noise".
    "webhook_purchases_ratio": (">=", 0.9),
    "followup_lag_p99_s": ("<=", 1.0),
    # Purchases/s with the follow-up process over without it (A-B-A-B-A): "within the noise".
    "followup_purchases_ratio": (">=", 0.9),
    "summary_p50_ratio": ("<=", 1.5),
    "summary_p50_ms": ("<", 100.0),
    "value_page_p50_ratio": ("<=", 1.5),
    "value_page_p50_ms": ("<", 100.0),
    "value_class_page_p50_ratio": ("<=", 1.5),
    "value_class_page_p50_ms": ("<", 100.0),
}
# Ratios over the raw ceilings of PostgreSQL: in the report and results.json, with no target.
INFORMATION = ("ratio", "ratio_to_locked", "import_ratio", "replay_ratio")
INFO = "information"
SCALE_TARGETS = tuple(name for name in TARGETS if name.startswith(("summary_", "value_")))

SKIPPED_MEMORY = "not measured (--no-memory-phase)"
SKIPPED_REPLAY = "not measured (--no-replay-phase)"
SKIPPED_LAG = "not measured (--no-worker-lag)"
SKIPPED_WEBHOOKS = "not measured (--no-webhooks)"
SKIPPED_FOLLOWUPS = "not measured (--no-followups)"
SKIPPED_IMPORT = "not measured (--no-import-phase)"
SKIPPED_CEILING = "not measured (--no-ceiling)"
SKIPPED_PEER = "not measured (--no-peer)"
SKIPPED_SCALE = "not measured (--no-scale-phase)"
SKIPPED_ONE_SIZE = "not measured (one --scale-members size)"


def _share(numerator: Any, denominator: Any, digits: int = 3) -> float | None:
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float):
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return None
    return round(numerator / denominator, digits)


def anchor_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """Purchases/s over the ceiling's requests/s and over the peer's purchases/s, and the share
    of a purchase's API CPU that the ceiling's requests spend (plain Flask; with flask-smorest,
    webargs and marshmallow): only those whose figures the run has."""
    pairs = {
        "ratio_to_ceiling": ("purchases_per_s", "ceiling_requests_per_s"),
        "ratio_to_peer": ("purchases_per_s", "peer_purchases_per_s"),
        "flask_cpu_share": ("ceiling_cpu_ms_per_request", "api_cpu_ms_per_purchase"),
        "framework_cpu_share": ("schema_ceiling_cpu_ms_per_request", "api_cpu_ms_per_purchase"),
    }
    out = {}
    for name, (numerator, denominator) in pairs.items():
        value = _share(figures.get(numerator), figures.get(denominator))
        if value is not None:
            out[name] = value
    return out


def verdicts(figures: dict[str, Any], skipped: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Pass or fail per target; ``skipped`` names the targets whose phase was skipped; the
    ``INFORMATION`` figures the run has, with no target."""
    out: dict[str, dict[str, Any]] = {}
    for name, (op, target) in TARGETS.items():
        value = figures.get(name)
        if name in skipped:
            verdict = skipped[name]
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            verdict = "not measured"
        else:
            met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
            verdict = "pass" if met else "FAIL"
        out[name] = {"value": value, "target": f"{op} {target:g}", "verdict": verdict}
    for name in INFORMATION:
        if figures.get(name) is not None:
            out[name] = {"value": figures[name], "target": "", "verdict": INFO}
    return out


def passed(checks: dict[str, dict[str, Any]], skipped: dict[str, str]) -> bool:
    """Every target met, but for those skipped; information counts for nothing."""
    return all(
        c["verdict"] in ("pass", INFO) or c["verdict"] in skipped.values() for c in checks.values()
    )


def print_table(figures: dict[str, Any], checks: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("purchases/s (8 clients)", "purchases_per_s"),
        ("purchase p50 ms", "purchase_p50_ms"),
        ("purchase p99 ms", "purchase_p99_ms"),
        ("API worker CPU ms per purchase", "api_cpu_ms_per_purchase"),
        ("ceiling requests/s (plain Flask)", "ceiling_requests_per_s"),
        ("ceiling CPU ms per request", "ceiling_cpu_ms_per_request"),
        ("ratio purchases/ceiling", "ratio_to_ceiling"),
        ("smorest+marshmallow requests/s", "schema_ceiling_requests_per_s"),
        ("smorest+marshmallow CPU ms/req", "schema_ceiling_cpu_ms_per_request"),
        ("Flask share of purchase CPU", "flask_cpu_share"),
        ("framework share of purchase CPU", "framework_cpu_share"),
        ("eventsourcing peer purchases/s", "peer_purchases_per_s"),
        ("eventsourcing peer CPU ms/purchase", "peer_cpu_ms_per_purchase"),
        ("ratio purchases/peer", "ratio_to_peer"),
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
        ("purchases/s with webhooks", "webhook_purchases_per_s"),
        ("ratio with/without webhooks (ABA)", "webhook_purchases_ratio"),
        ("webhook delivery lag p50 s", "webhook_delivery_lag_p50_s"),
        ("webhook delivery lag p99 s", "webhook_delivery_lag_p99_s"),
        ("dispatcher CPU ms per message", "webhook_dispatcher_cpu_ms_per_message"),
        ("purchases/s with follow-ups", "followup_purchases_per_s"),
        ("ratio with/without follow-ups", "followup_purchases_ratio"),
        ("follow-up lag p50 s", "followup_lag_p50_s"),
        ("follow-up lag p99 s", "followup_lag_p99_s"),
        ("follow-up process CPU ms per event", "followup_process_cpu_ms_per_event"),
        ("events replayed", "replay_events"),
        ("replay events/s", "replay_events_per_s"),
        ("raw scan rows/s", "raw_scan_rows_per_s"),
        ("ratio replay/raw scan", "replay_ratio"),
        *_scale_rows(figures),
    ]
    print()
    print(f"{'metric':<38} {'value':>12}  {'target':<10} verdict")
    print("-" * 78)
    for label, name in rows:
        value = figures.get(name)
        shown = (
            "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        )
        check = checks.get(name, {})
        print(f"{label:<38} {shown:>12}  {check.get('target', ''):<10} {check.get('verdict', '')}")
    print()


def _scale_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """Per size (``scale_<members>_<figure>``, from ``bench.scale.scale_ratios``, in the order
    the phase recorded them), then the scale targets."""
    rows: list[tuple[str, str]] = []
    flat = [
        (int(found[1]), index, name, found[2])
        for index, name in enumerate(figures)
        if (found := re.fullmatch(r"scale_(\d+)_(\w+)", name))
    ]
    for size, _index, name, what in sorted(flat):
        label = "read models catch-up s" if what == "project_s" else what.replace("_", " ")
        rows.append((f"{label} ({size:,})", name))
    for name in SCALE_TARGETS:
        read, _, what = name.rpartition("_p50_")
        unit = "largest/smallest" if what == "ratio" else "ms (largest)"
        rows.append((f"{read.replace('_', ' ')} p50 {unit}", name))
    return rows


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
    if not args.webhooks:
        skipped["webhook_delivery_lag_p99_s"] = SKIPPED_WEBHOOKS
        skipped["webhook_purchases_ratio"] = SKIPPED_WEBHOOKS
    if not args.followups:
        skipped["followup_lag_p99_s"] = skipped["followup_purchases_ratio"] = SKIPPED_FOLLOWUPS
    if not args.ceiling:
        skipped["ratio_to_ceiling"] = SKIPPED_CEILING
    if not args.peer:
        skipped["ratio_to_peer"] = SKIPPED_PEER
    for name in SCALE_TARGETS:
        if not args.scale_phase:
            skipped[name] = SKIPPED_SCALE
        elif name.endswith("_ratio") and len(args.scale_members) < 2:
            skipped[name] = SKIPPED_ONE_SIZE
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
        "ceiling_requests_per_s": figures.get("ceiling_requests_per_s"),
        "ratio_to_ceiling": figures.get("ratio_to_ceiling"),
        "peer_purchases_per_s": figures.get("peer_purchases_per_s"),
        "ratio_to_peer": figures.get("ratio_to_peer"),
        "api_cpu_ms_per_purchase": figures.get("api_cpu_ms_per_purchase"),
        "flask_cpu_share": figures.get("flask_cpu_share"),
        "framework_cpu_share": figures.get("framework_cpu_share"),
        "import_purchases_per_s": figures.get("import_purchases_per_s"),
        "import_ratio": figures.get("import_ratio"),
        "status_read_p99_ms": figures.get("status_read_p99_ms"),
        "long_history_ratio": figures.get("long_history_ratio"),
        "peak_rss_mb": figures.get("peak_rss_mb"),
        "replay_events_per_s": figures.get("replay_events_per_s"),
        "replay_ratio": figures.get("replay_ratio"),
        "worker_lag_p99_s": figures.get("worker_lag_p99_s"),
        "webhook_delivery_lag_p99_s": figures.get("webhook_delivery_lag_p99_s"),
        "webhook_purchases_ratio": figures.get("webhook_purchases_ratio"),
        "followup_lag_p99_s": figures.get("followup_lag_p99_s"),
        "followup_purchases_ratio": figures.get("followup_purchases_ratio"),
        **{name: figures.get(name) for name in SCALE_TARGETS},
        "targets": checks,
        "passed": passed(checks, skipped),
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
