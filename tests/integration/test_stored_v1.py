"""Events and snapshots as a running installation stored them before the member model was
reshaped (tests/fixtures/stored_v1.json, written by tests/fixtures/make_stored_v1.py at bdb9a8d):
loaded by today's code through its upcasters, every answer is the one the old code gave."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import closing, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.settings import Database, Settings
from adapters.vault import Vault
from adapters.views import open_member_status_view
from api import representations
from api.bootstrap import bootstrap
from domain import eventlog
from domain.clock import FixedClock
from domain.ledger import Ledger

FIXTURE = Path(__file__).parent.parent / "fixtures" / "stored_v1.json"
MEMBERS = ["ann", "bob", "cat", "dan", "eve", "fay", "gus", "m1"]


def stored(rows: list[dict[str, Any]], compress: bool = False) -> list[StoredEvent]:
    def state(row: dict[str, Any]) -> bytes:
        raw = json.dumps(row["state"]).encode()
        return zlib.compress(raw) if compress else raw

    return [
        StoredEvent(
            originator_id=UUID(row["originator_id"]),
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=state(row),
        )
        for row in rows
    ]


@pytest.fixture
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


@pytest.fixture
def ledger(tmp_path: Path, recorded: dict[str, Any]) -> Iterator[Ledger]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "v1.db")}
    writer = Application[UUID]({**env, "IS_SNAPSHOTTING_ENABLED": "y"})
    writer.name = Ledger.name
    writer.recorder.insert_events(stored(recorded["events"]))
    assert writer.snapshots is not None
    writer.snapshots.recorder.insert_events(stored(recorded["snapshots"]))
    writer.close()
    now = datetime.fromisoformat(recorded["expected"]["now"])
    found = Ledger(env=env, clock=FixedClock(now), sealer=Vault.in_memory())
    # As bootstrap does on the first start after the upgrade: plain personal data sealed.
    found.seal_legacy_personal_data("upgrade")
    yield found
    found.close()


def test_the_fixture_holds_every_member_event_in_its_old_form(recorded: dict[str, Any]) -> None:
    topics = {row["topic"] for row in recorded["events"]}
    assert len({t for t in topics if t.startswith("domain.members:Member.")}) == 20
    lots = [row["state"] for row in recorded["events"] if "PointsBecameAvailable" in row["topic"]]
    assert all(isinstance(state["lot"], int) for state in lots)  # positions, as v1 stored them
    assert recorded["snapshots"] and all(
        row["topic"] == "eventsourcing.domain:Snapshot" for row in recorded["snapshots"]
    )


def test_a_program_stored_before_notices_reads_with_the_default_notice_days(
    ledger: Ledger, recorded: dict[str, Any]
) -> None:
    published = [row["state"] for row in recorded["events"] if row["topic"].endswith("Published")]
    assert len(published) == 2 and all("notices" not in state["rules"] for state in published)
    first = ledger.program_at(datetime(2024, 1, 2, tzinfo=UTC))
    assert first.version == 1
    for rules in (ledger.program().rules, first.rules):
        assert (rules.expiry_notice_days, rules.guarantee_notice_days) == (30, 7)
    assert ledger.program().rules.to_dict()["notices"] == {
        "expiry_notice_days": 30,
        "guarantee_notice_days": 7,
    }


def test_statuses_read_as_before(ledger: Ledger, recorded: dict[str, Any]) -> None:
    expected = recorded["expected"]
    for member_id in MEMBERS:
        found = opened(ledger, representations.status(ledger.member_status(member_id)))
        assert found == {**expected["status"][member_id], "personal_data": "held"}, member_id


def test_statuses_as_of_an_earlier_instant_read_as_before(
    ledger: Ledger, recorded: dict[str, Any]
) -> None:
    for member_id, status in recorded["expected"]["status_as_of"].items():
        as_of = datetime.fromisoformat(status["as_of"])
        found = representations.status(ledger.member_status(member_id, as_of))
        assert opened(ledger, found) == {**status, "personal_data": "held"}


def opened(ledger: Ledger, status: dict[str, Any]) -> dict[str, Any]:
    return representations.opened(status, ledger.sealer)


def test_purchases_and_referrals_read_as_before(ledger: Ledger, recorded: dict[str, Any]) -> None:
    expected = recorded["expected"]
    for order_id, purchase in expected["purchases"].items():
        assert representations.purchase(ledger.purchase(order_id)) == purchase, order_id
    made = ledger.referrals("ann")
    assert representations.referrals("ann", made) == expected["referrals"]


def test_repeated_requests_answer_as_before(ledger: Ledger, recorded: dict[str, Any]) -> None:
    expected = recorded["expected"]
    half = Decimal("200.00")
    for key, answer in expected["refunds"].items():
        order_id, refund_id = key.split("/")
        amount, reason = (half, "broken") if refund_id == "r1" else (None, None)
        written = ledger.refund(order_id, refund_id, amount, reason, "test")
        assert not written.created
        assert representations.recorded_refund(written.value, refund_id) == answer, key
    claimed = ledger.claim_guarantee("o3", "c1", None, "test")
    assert not claimed.created
    assert representations.claim(claimed.value) == expected["claim"]
    cancelled = ledger.cancel_redemption("rd1", "test")
    assert representations.redemption(cancelled.value) == expected["redemptions"]["rd1"]


def test_the_old_history_goes_on(ledger: Ledger) -> None:
    """New events after old ones: points mature, are redeemed from lots that old events named
    by position and by name, and come back on cancellation."""
    before = ledger.member_status("m1").points
    assert before.available == -18  # o6 matured under the old code, into a debt of 23
    ledger.record_purchase("o7", "m1", Decimal("100.00"), "USD", None, None, None, "test")
    clock = ledger.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(days=31))
    matured = ledger.member_status("m1").points
    assert matured.available == before.available + 100
    redeemed = ledger.redeem("m1", "rd9", None, matured.available, "test").value
    assert redeemed.taken == {"purchase:o7": 82}  # the new lot, named by what it came from
    assert ledger.member_status("m1").points.available == 0
    ledger.cancel_redemption("rd9", "test")
    assert ledger.member_status("m1").points.available == matured.available


def test_the_first_start_after_the_upgrade_seals_the_plain_personal_data(
    tmp_path: Path, recorded: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    env = Database.from_url(url).event_store_env()
    writer = Application[UUID]({**env, "IS_SNAPSHOTTING_ENABLED": "y"})
    writer.name = Ledger.name
    writer.recorder.insert_events(stored(recorded["events"], compress=True))
    assert writer.snapshots is not None
    writer.snapshots.recorder.insert_events(stored(recorded["snapshots"], compress=True))
    writer.close()
    enrolled = [row for row in recorded["events"] if row["topic"].endswith("Member.Enrolled")]
    plain = {row["state"]["email"] for row in enrolled} | {
        row["state"]["name"] for row in enrolled if row["state"]["name"]
    }
    with closing(sqlite3.connect(Database.from_url(url).path)) as conn, conn:
        # A read model of the older shape, its rows holding the status with the plain email.
        conn.execute("CREATE TABLE member_status (member_id TEXT PRIMARY KEY, status TEXT)")
        status = json.dumps(recorded["expected"]["status"]["ann"])
        conn.execute("INSERT INTO member_status VALUES ('ann', ?)", (status,))
    # Before: the old events, the old snapshots and the old read model hold them in plain text.
    assert plain and {table for table, _ in hits(url, plain)} == {
        "stored_events",
        "stored_snapshots",
        "member_status",
    }
    reader = Ledger(env=env, clock=FixedClock(datetime.fromisoformat(recorded["expected"]["now"])))
    logged_before = eventlog.page(reader, 0, 1000)
    reader.close()

    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": url})
    ledger, keys, _ = bootstrap(settings)
    try:
        view = open_member_status_view(ledger.env)
        ProjectionWorker(ledger, MemberStatusProjection(view, ledger, representations)).catch_up()
        view.close()
        assert hits(url, plain) == [], "no plain email or name is left anywhere"
        # Removing them from the old rows changed nothing anyone reads: the log is the same.
        logged_after = eventlog.page(ledger, 0, len(logged_before))
        assert logged_after == logged_before
        shown = representations.opened(
            representations.status(ledger.member_status("ann")), ledger.sealer
        )
        assert shown["email"] == recorded["expected"]["status"]["ann"]["email"]
        sealing = [e for e in ledger.event_log(0, 1000) if e["type"] == "PersonalDataSealed"]
        assert len(sealing) == len(enrolled)
        assert sealing[0]["actor"] == {"kind": "system", "name": "upgrade"}
        ledger.erase_personal_data("ann", "erase")
        gone = representations.opened(
            representations.status(ledger.member_status("ann")), ledger.sealer
        )
        assert (gone["email"], gone["name"], gone["personal_data"]) == (None, None, "erased")
    finally:
        ledger.close()
        keys.close()
    again, keys, _ = bootstrap(settings)  # a second start seals nothing more
    try:
        sealed = [e for e in again.event_log(0, 1000) if e["type"] == "PersonalDataSealed"]
        assert len(sealed) == len(enrolled)
    finally:
        again.close()
        keys.close()


def hits(url: str, plain: set[str]) -> list[tuple[str, str]]:
    """(table, topic or '') of every row of the SQLite file that holds one of ``plain``."""
    found = []
    with closing(sqlite3.connect(Database.from_url(url).path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                cells = dict(zip(columns, row, strict=True))
                text = " ".join(_text(cell) for cell in row)
                if any(value in text for value in plain):
                    found.append((table, str(cells.get("topic", ""))))
    return found


def _text(cell: Any) -> str:
    if isinstance(cell, bytes):
        with suppress(zlib.error):
            cell = zlib.decompress(cell)
        return cell.decode("utf-8", errors="replace")
    return str(cell)
