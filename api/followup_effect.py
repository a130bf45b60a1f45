"""The answer of ``GET /v1/analytics/followups``: each plan version's groups, uplift and steps,
from the follow-up process's read models (``adapters/followup_tables.py``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.followup_process import NAME
from adapters.followup_tables import FollowupTables, GroupFigures, StepFigures
from domain.effect import Group, Interval, uplift

METHOD = "newcombe-hybrid-score"


def answer(tables: FollowupTables, plan: str | None, now: datetime) -> dict[str, Any]:
    groups: dict[tuple[str, int], dict[str, GroupFigures]] = defaultdict(dict)
    for figures in tables.groups(plan):
        groups[(figures.plan, figures.version)][figures.group] = figures
    steps: dict[tuple[str, int], list[StepFigures]] = defaultdict(list)
    for step in tables.steps(plan):
        steps[(step.plan, step.version)].append(step)
    return {
        "position": tables.max_tracking_id(NAME) or 0,
        "as_of": now,
        "plans": [
            _version(key, groups[key], steps.get(key, []))
            for key in sorted(groups.keys() | steps.keys())
        ],
    }


def _group(figures: GroupFigures | None) -> Group:
    if figures is None:
        return Group(0, 0, Decimal(0))
    return Group(figures.members, figures.converted, figures.revenue)


def _version(
    key: tuple[str, int], groups: dict[str, GroupFigures], steps: list[StepFigures]
) -> dict[str, Any]:
    treated, holdout = _group(groups.get("treated")), _group(groups.get("holdout"))
    found = uplift(treated, holdout)
    by_step: dict[int, dict[str, StepFigures]] = defaultdict(dict)
    for step in steps:
        by_step[step.step][step.group] = step
    return {
        "plan": key[0],
        "version": key[1],
        "entered": treated.members + holdout.members,
        "treated": _group_view(treated),
        "holdout": _group_view(holdout),
        "uplift": {
            "conversion": found.conversion,
            "interval": _interval(found.interval),
            "method": METHOD,
            "wald_interval": _interval(found.wald),
            "revenue_per_member": found.revenue_per_member,
        },
        "steps": [_step(n, by_step[n], treated.members) for n in sorted(by_step)],
    }


def _group_view(group: Group) -> dict[str, Any]:
    return {
        "members": group.members,
        "converted": group.converted,
        "conversion_rate": group.conversion,
        "revenue": group.revenue.quantize(Decimal("0.01")),
        "revenue_per_member": group.revenue_per_member,
    }


def _interval(found: Interval | None) -> dict[str, float] | None:
    return None if found is None else {"low": found.low, "high": found.high}


def _step(n: int, groups: dict[str, StepFigures], treated: int) -> dict[str, Any]:
    sent = groups.get("treated")
    withheld = groups.get("holdout")
    reached = sent.recorded if sent else 0
    return {
        "n": n,
        "reached": reached,
        "share_reached": None if treated == 0 else reached / treated,
        "withheld": withheld.recorded if withheld else 0,
        "outcomes": {
            "sent": sent.sent if sent else 0,
            "failed": sent.failed if sent else 0,
        },
    }
