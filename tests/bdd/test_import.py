"""Scenarios of features/import.feature, with the steps only they use.

An import file is applied in process with ``api.imports.run`` on the scenario's ledger (its
clock is the scenario's), or with ``daifuku import`` in a process of its own on the same store
when the scenario kills it. "One run into a fresh store" and "posted one by one" are worked out
on in-memory ledgers at the scenario's instant (tests/histories.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, scenarios, then, when

from api import imports
from api.imports import Report, Result
from domain.errors import UnknownMember
from domain.ledger import Ledger
from tests.bdd.conftest import World, step
from tests.e2e.test_cli import ROOT
from tests.histories import (
    at,
    changes,
    in_memory,
    lines,
    member_ids,
    post_one_by_one,
    shop_history,
    statuses,
)

scenarios("import.feature")

HISTORY_START = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
KILL_TIMEOUT = 30.0


@dataclass
class Imports:
    """The scenario's import files and what became of them."""

    directory: Path
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reports: list[tuple[Report, list[Result]]] = field(default_factory=list)
    log_after_first: list[dict[str, Any]] | None = None
    killed_run_saved: set[int] = field(default_factory=set)  # lines saved before the kill
    process_report: dict[str, Any] | None = None

    def path(self, name: str) -> Path:
        return self.directory / name


@pytest.fixture
def imported(tmp_path: Path) -> Imports:
    return Imports(tmp_path)


def record_of(row: dict[str, str]) -> dict[str, Any]:
    kind, ident, of, moment = row["kind"], row["id"], row["of"], row["at"]
    if kind == "member":
        return {
            "kind": kind,
            "member_id": ident,
            "email": f"{ident}@example.com",
            "enrolled_at": moment,
        }
    if kind == "purchase":
        record: dict[str, Any] = {
            "kind": kind,
            "order_id": ident,
            "member_id": of,
            "amount": row["amount"],
            "currency": "USD",
            "occurred_at": moment,
        }
        if row["category"]:
            category = row["category"]
            record["items"] = [
                {"sku": f"sku-{category}", "category": category, "quantity": 1, "unit_price": "1"}
            ]
        return record
    if kind == "refund":
        record = {"kind": kind, "order_id": of, "refund_id": ident, "occurred_at": moment}
        if row["amount"]:
            record["amount"] = row["amount"]
        return record
    assert kind == "redemption", row
    return {
        "kind": kind,
        "member_id": of,
        "redemption_id": ident,
        "points": int(row["points"]),
        "occurred_at": moment,
    }


def write(imported: Imports, name: str, records: list[dict[str, Any]]) -> None:
    imported.files[name] = records
    imported.path(name).write_text("\n".join(lines(records)) + "\n", encoding="utf-8")


def whole_log(ledger: Ledger) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while page := ledger.event_log(after=found[-1]["position"] if found else 0, limit=1000):
        found.extend(page)
    return found


def import_name(name: str) -> str:
    return Path(name).stem


def run_import(world: World, imported: Imports, name: str) -> tuple[Report, list[Result]]:
    with imported.path(name).open(encoding="utf-8") as text:
        done = imports.run(world.ledger, text.read().splitlines(), import_name(name))
    imported.reports.append(done)
    return done


def last_report(imported: Imports) -> tuple[Report, list[Result]]:
    assert imported.reports, "nothing was imported"
    return imported.reports[-1]


def one_run_into_a_fresh_store(world: World, records: list[dict[str, Any]]) -> Ledger:
    ledger, _ = in_memory(world.clock.now())
    report, _ = imports.run(ledger, lines(records), "fresh")
    assert report.total("rejected") == 0, report.to_dict()
    return ledger


def saved_lines(ledger: Ledger, name: str, records: list[dict[str, Any]]) -> set[int]:
    """The lines of the import ``name`` whose changes the store holds (every applied record
    records at least one event under its cause import:<name>:<line>)."""
    prefix = f"import:{name}:"
    found: set[int] = set()
    for member_id in member_ids(records):
        try:
            events = ledger.member_events(member_id, limit=100_000)
        except UnknownMember:
            continue
        found.update(
            int(e["data"]["cause"].removeprefix(prefix))
            for e in events
            if e["data"]["cause"].startswith(prefix)
        )
    return found


# Files.


@given(step('the import file "{name:q}" holds these records:'))
def file_holds(imported: Imports, name: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    write(imported, name, [record_of(dict(zip(header, row, strict=True))) for row in rows])


@given(step('the import file "{name:q}" holds the history of {count:d} members of a shop'))
def file_holds_a_shop(imported: Imports, name: str, count: int) -> None:
    write(imported, name, shop_history(count, HISTORY_START))


# Importing in process.


@given(step('the import file "{name:q}" was imported'))
def file_was_imported(world: World, imported: Imports, name: str) -> None:
    report, _ = run_import(world, imported, name)
    assert report.total("applied") == report.read, report.to_dict()
    imported.log_after_first = whole_log(world.ledger)


@when(step('the import file "{name:q}" is imported'))
@when(step('the import file "{name:q}" is imported again'))
def file_is_imported(world: World, imported: Imports, name: str) -> None:
    run_import(world, imported, name)


@then(step("the import applied all {count:d} records"))
def applied_all(imported: Imports, count: int) -> None:
    report, results = last_report(imported)
    assert (report.read, report.total("applied")) == (count, count), report.to_dict()
    assert [r.status for r in results] == ["applied"] * count, results


@then(step("the second import found all {count:d} records already present"))
def all_present(imported: Imports, count: int) -> None:
    assert len(imported.reports) == 2
    report, results = last_report(imported)
    assert (report.read, report.total("present")) == (count, count), report.to_dict()
    assert [r.status for r in results] == ["present"] * count, results


@then("the event log is as the first import left it")
def log_unchanged(world: World, imported: Imports) -> None:
    assert imported.log_after_first is not None
    assert whole_log(world.ledger) == imported.log_after_first


@then("the import reports these lines:")
def reports_lines(imported: Imports, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [dict(zip(header, row, strict=True)) for row in rows]
    _, results = last_report(imported)
    found = []
    for result in results:
        problem = result.problem or {}
        slug = problem.get("type", "").removeprefix("https://daifuku.dev/problems/")
        found.append(
            {
                "line": str(result.line),
                "status": result.status,
                "problem": slug,
                "field": ",".join(problem.get("errors") or {}),
            }
        )
    assert found == expected, results


@then(step("no event was recorded for lines {first:d} and {second:d}"))
def nothing_for_lines(world: World, imported: Imports, first: int, second: int) -> None:
    (name,) = imported.files
    causes = {event["data"].get("cause") for event in whole_log(world.ledger)}
    stem = import_name(name)
    assert f"import:{stem}:1" in causes, causes
    assert not causes & {f"import:{stem}:{first}", f"import:{stem}:{second}"}, causes


# Statuses.


@then(step('"{member_id:q}" has earned {points:d} points in all'))
def has_earned(world: World, member_id: str, points: int) -> None:
    assert world.status(member_id)["points"]["lifetime_earned"] == points


@then(step('"{member_id:q}" is at the "{stage:q}" stage'))
def is_at_stage(world: World, member_id: str, stage: str) -> None:
    assert world.status(member_id)["stage"] == stage


@then(step('the ledger recorded these tier changes for "{member_id:q}":'))
def tier_changes(world: World, member_id: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    expected = [dict(zip(header, row, strict=True)) for row in rows]
    found = [
        {
            "from": e["data"]["from_tier"],
            "to": e["data"]["to_tier"],
            "reason": e["data"].get("reason") or "",
        }
        for e in world.events(member_id)
        if e["type"] in ("TierUpgraded", "TierDowngraded")
    ]
    assert found == expected, found


@then(step('"{member_id:q}" ends as when the same records are posted one by one, each on its day'))
def as_posted_one_by_one(world: World, imported: Imports, member_id: str) -> None:
    (records,) = imported.files.values()
    live, clock = in_memory(min(at(record) for record in records))
    assert post_one_by_one(live, clock, records) == {}
    clock.set(world.clock.now())
    assert statuses(world.ledger, [member_id]) == statuses(live, [member_id])
    assert changes(world.ledger, [member_id]) == changes(live, [member_id])


# ``daifuku import`` in a process of its own, killed half-way.


def import_command(imported: Imports, name: str, batch: int) -> list[str]:
    report = imported.path(f"{name}.report.json")
    return [
        sys.executable, "-m", "api.cli", "import", str(imported.path(name)),
        "--batch", str(batch), "--report-json", str(report),
    ]  # fmt: skip


def command_env(database_url: str) -> dict[str, str]:
    env = {**os.environ, "DAIFUKU_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    env.pop("DAIFUKU_SECRET_KEY", None)
    env.pop("DAIFUKU_MASTER_KEY", None)
    return env


@when(step('"daifuku import {name} --batch {batch:d}" is killed after its first batches are saved'))
def import_killed(
    world: World, imported: Imports, database_url: str, name: str, batch: int
) -> None:
    recorder: Any = world.ledger.recorder
    before = recorder.max_notification_id() or 0
    process = subprocess.Popen(
        import_command(imported, name, batch),
        cwd=ROOT,
        env=command_env(database_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        # A few batches saved: dozens of events.
        while (recorder.max_notification_id() or 0) < before + 30:
            assert process.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import saved nothing"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


@then(step('the store holds part of the history of "{name:q}"'))
def holds_part(world: World, imported: Imports, name: str) -> None:
    records = imported.files[name]
    # A batch the database was writing when its process was killed still commits: let it.
    time.sleep(0.5)
    imported.killed_run_saved = saved_lines(world.ledger, import_name(name), records)
    assert 0 < len(imported.killed_run_saved) < len(records) // 2, imported.killed_run_saved


@when(step('"daifuku import {name} --batch {batch:d}" runs again to the end'))
def import_runs_again(imported: Imports, database_url: str, name: str, batch: int) -> None:
    done = subprocess.run(
        import_command(imported, name, batch),
        cwd=ROOT,
        env=command_env(database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    imported.process_report = json.loads(imported.path(f"{name}.report.json").read_text())


@then("it found the records saved before the kill present, applied the others, rejected none")
def resumed(imported: Imports) -> None:
    report = imported.process_report
    assert report is not None
    (records,) = imported.files.values()
    saved = len(imported.killed_run_saved)
    assert (report["read"], report["present"], report["applied"], report["rejected"]) == (
        len(records),
        saved,
        len(records) - saved,
        0,
    ), report


@then(step('every member of "{name:q}" ends as after one run of it into a fresh store'))
def as_one_run(world: World, imported: Imports, name: str) -> None:
    records = imported.files[name]
    fresh = one_run_into_a_fresh_store(world, records)
    members = member_ids(records)
    assert statuses(world.ledger, members) == statuses(fresh, members)
    found, expected = changes(world.ledger, members), changes(fresh, members)
    assert found == expected, (found - expected, expected - found)
    assert Counter(kind for _, kind, _ in found)["ReferralRewarded"] > 0
