"""Scenarios of features/audit.feature: rebuilding, exporting and verifying from the ledger.

What has an endpoint goes through the HTTP API (status, analytics, export, verification); the
projection worker and the replay are driven as the ``daifuku project`` and ``daifuku replay``
commands drive them, with a view of their own on the scenario's database, as a separate
process would have.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
import pytest
from psycopg import sql
from pytest_bdd import given, scenarios, then, when

from adapters.export import canonical, sha256, verify_lines
from adapters.projections import (
    PAGE,
    MemberStatusProjection,
    ProgressReport,
    ProjectionWorker,
    Shapes,
    replay,
)
from adapters.settings import Database
from adapters.verification import MISSING_LIVE, Verification, verify_member_status
from adapters.verification_jobs import VerificationJobs
from adapters.views import MemberStatusView, open_member_status_view, plain
from api import representations
from api.app import create_app
from api.cli import main
from api.context import EXTENSION, Backend
from api.reads import READ_FROM_HEADER
from domain.ledger import Ledger
from tests.answers import answers
from tests.bdd.conftest import World, publish_program, purchase_body, step

scenarios("audit.feature")

VIEW_TABLE = "member_status"
TRACKING_TABLE = "member_status_tracking"


class Killed(Exception):
    """The projection worker's process dies here."""


@dataclass
class Audit:
    """What a scenario keeps between its steps; the views it opened are closed at its end."""

    world: World
    tmp_path: Path
    views: list[MemberStatusView] = field(default_factory=list)
    reads: dict[str, tuple[str, Any]] = field(default_factory=dict)  # path: (source, body)
    analytics: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    export: list[str] = field(default_factory=list)
    page_size: int = PAGE
    changed_line: int = 0  # 1-based
    before: dict[str, Any] = field(default_factory=dict)  # a row's status as dotted fields
    _view: MemberStatusView | None = None

    def open_view(self) -> MemberStatusView:
        """A connection of its own to the view, as a separate process would open it; closed at
        the end of the scenario."""
        view = open_member_status_view(self.world.ledger.env)
        self.views.append(view)
        return view

    @property
    def view(self) -> MemberStatusView:
        """The operator's connection to the view: to look at it, empty it, replay into it."""
        if self._view is None:
            self._view = self.open_view()
        return self._view

    @contextmanager
    def worker(self) -> Iterator[ProjectionWorker]:
        """A worker process: new view connections, new projection, nothing cached; its
        connections are closed when it ends, whether it finished or was killed."""
        view = open_member_status_view(self.world.ledger.env)
        try:
            projection = MemberStatusProjection(view, self.world.ledger, representations)
            yield ProjectionWorker(self.world.ledger, projection, self.page_size)
        finally:
            view.close()

    def head(self) -> int:
        return self.world.ledger.recorder.max_notification_id() or 0

    def position(self) -> int:
        return self.view.max_tracking_id(self.world.ledger.name) or 0


@pytest.fixture
def audit(world: World, tmp_path: Path) -> Iterator[Audit]:
    found = Audit(world, tmp_path)
    try:
        yield found
    finally:
        for view in found.views:
            view.close()


def rows_of(view: MemberStatusView) -> list[tuple[Any, ...]]:
    """Every member row and every purchase row of the read models, as comparable values."""
    members = [
        (
            row.member_id,
            row.status,
            row.version,
            row.applied,
            row.updated_at.astimezone(UTC),
            row.program_version,
            None if row.valid_until is None else row.valid_until.astimezone(UTC),
            row.referrals,
        )
        for row in view.all()
    ]
    purchases = [(row.order_id, row.member_id, row.purchase) for row in view.all_purchases()]
    return [*members, *purchases]


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def logged(world: World) -> tuple[list[str], list[str]]:
    """Every member and every order the ledger knows, from the auditor's event log."""
    members: set[str] = set()
    orders: set[str] = set()
    after = 0
    while True:
        response = world.call("GET", f"/v1/events?after={after}&limit=1000", "auditor")
        page = response.get_json()
        assert response.status_code == 200, page
        for item in page["items"]:
            if item["member_id"]:
                members.add(item["member_id"])
            if item["type"] == "PurchaseRecorded":
                orders.add(item["data"]["order_id"])
        if page["next"] is None:
            return sorted(members), sorted(orders)
        after = page["next"]


def member_ids(world: World) -> list[str]:
    return logged(world)[0]


def storefront_reads(audit: Audit) -> dict[str, tuple[str, Any]]:
    """What a storefront reads of every member and every purchase, and who answered it."""
    members, orders = logged(audit.world)
    paths = [
        *(f"/v1/members/{member_id}" for member_id in members),
        *(f"/v1/members/{member_id}/referrals" for member_id in members),
        *(f"/v1/purchases/{order_id}" for order_id in orders),
    ]
    found: dict[str, tuple[str, Any]] = {}
    for path in paths:
        response = audit.world.call("GET", path, "storefront")
        assert response.status_code == 200, response.get_json()
        found[path] = (response.headers[READ_FROM_HEADER], response.get_json())
    for member_id in members:  # whoever answers, the status is the one the ledger folds now
        folded = plain(answers(audit.world.ledger).member_status(member_id))
        assert found[f"/v1/members/{member_id}"][1] == folded, member_id
    return found


def analytics(world: World) -> dict[str, Any]:
    summary = world.call("GET", "/v1/analytics/summary", "auditor")
    assert summary.status_code == 200, summary.get_json()
    members = world.call("GET", "/v1/analytics/members?limit=1000", "auditor")
    assert members.status_code == 200, members.get_json()
    assert members.get_json()["next"] is None, members.get_json()
    return {"summary": summary.get_json(), "members": members.get_json()}


# History: the steps no other feature shares.


@given(
    step('"{member_id:q}" bought "{order_id:q}" for "{amount:q}" under the "{policy:q}" guarantee')
)
def bought_under_guarantee(
    world: World, member_id: str, order_id: str, amount: str, policy: str
) -> None:
    body = purchase_body(order_id, amount, member_id, guarantee=policy)
    response = world.call("POST", "/v1/purchases", "storefront", body)
    assert response.status_code == 201, world.body()
    assert world.body()["guarantee"]["policy"] == policy, world.body()


@given(
    step(
        '"{member_id:q}" claimed the guarantee of order "{order_id:q}" as "{claim_id:q}" '
        'with the evidence "{evidence:q}"'
    )
)
def claimed_guarantee(
    world: World, member_id: str, order_id: str, claim_id: str, evidence: str
) -> None:
    body = {"claim_id": claim_id, "evidence": evidence}
    response = world.call("POST", f"/v1/purchases/{order_id}/guarantee-claims", "storefront", body)
    assert response.status_code == 201, world.body()
    assert world.purchase(order_id)["member_id"] == member_id


@given(
    step(
        'the admin published a program version in which the "{tier:q}" tier '
        'multiplies points by "{multiplier:q}"'
    )
)
def admin_published(world: World, tier: str, multiplier: str) -> None:
    version = world.program()["version"]
    publish_program(world, "admin", tier, multiplier)
    assert world.response is not None and world.response.status_code in (200, 201), world.body()
    assert world.program()["version"] == version + 1


# The projection worker.


@given("the projection worker has caught up with the ledger")
def worker_caught_up(audit: Audit) -> None:
    head = audit.head()
    with audit.worker() as worker:
        assert worker.catch_up() == head
    assert audit.position() == head


@given(step("the projection worker reads the log in batches of {size:d} events"))
def batches_of(audit: Audit, size: int) -> None:
    audit.page_size = size


@given(step("the projection worker has projected the ledger up to event {position:d}"))
def worker_projected_up_to(audit: Audit, position: int) -> None:
    assert audit.head() > 2 * position, "the history is too short for this scenario"
    with audit.worker() as worker:
        assert worker.catch_up(until=position) == position
    assert audit.position() == position


@contextmanager
def kill_switch(view: MemberStatusView, position: int, after: bool) -> Iterator[None]:
    """Every write of ``view`` looks, with its statements executed but not yet committed, at how
    far they take the view's position. The worker dies before committing the write that takes it
    to ``position`` or past it; or, with ``after``, lets that one commit and dies in the middle
    of its next write, whatever that one writes."""
    datastore = cast(Any, view).datastore  # the view's own connections
    original = datastore.transaction
    reached = False

    @contextmanager
    def transaction(*, commit: bool = False) -> Iterator[Any]:
        nonlocal reached
        with original(commit=commit) as cursor:
            yield cursor
            if not commit:
                return
            if reached:
                raise Killed("in the middle of the write after the batch")
            if uncommitted_position(view, cursor) >= position:
                if not after:
                    raise Killed(f"before committing the position of event {position}")
                reached = True

    datastore.transaction = transaction
    try:
        yield
    finally:
        datastore.transaction = original


def uncommitted_position(view: MemberStatusView, cursor: Any) -> int:
    """The view's tracking position as the open transaction sees it."""
    query = (
        "SELECT MAX(notification_id) AS position FROM {0} WHERE application_name <> '__migration__'"
    )
    if isinstance(cursor, psycopg.Cursor):
        schema = cast(Any, view).datastore.schema or "public"
        cursor.execute(sql.SQL(query).format(sql.Identifier(schema, TRACKING_TABLE)))
    else:
        cursor.execute(query.format(TRACKING_TABLE))
    found = cursor.fetchone()
    return int(found["position"] or 0)


@when(
    step(
        "a projection worker is killed {moment} it commits the batch that holds event {position:d}"
    )
)
def worker_killed(audit: Audit, moment: str, position: int) -> None:
    assert moment in ("just before", "just after"), moment
    size = audit.page_size
    started_at = audit.position()
    assert audit.head() >= position + 2 * size, "the history is too short for this scenario"
    after = moment == "just after"
    with (
        audit.worker() as worker,
        kill_switch(worker.projection.view, position, after),
        pytest.raises(Killed),
    ):
        worker.catch_up()
    reached = audit.position()
    assert reached >= started_at, "a killed worker took the view's position back"
    if moment == "just before":
        # Nothing of the batch that holds the event is there; the batches before it are.
        assert position - size <= reached < position, reached
    else:
        # The batch that holds the event is all there; nothing of the next one is.
        assert position <= reached < position + size, reached


@when("a new projection worker starts and catches up")
def new_worker_catches_up(audit: Audit) -> None:
    started_at = audit.position()
    with audit.worker() as worker:
        assert worker.position == started_at
        assert worker.catch_up() == audit.head() - started_at
        assert worker.position == audit.head()


@then("every event was applied exactly once")
def applied_exactly_once(audit: Audit) -> None:
    rows = list(audit.view.all())
    assert rows
    for row in rows:
        assert row.applied == row.version, row


@then("the member-status view holds what a replay from scratch holds, as of the last event")
def view_equals_replay(audit: Audit) -> None:
    scratch = open_member_status_view(
        Database(kind="sqlite", path=str(audit.tmp_path / "scratch.db")).event_store_env()
    )
    audit.views.append(scratch)
    assert replay(audit.world.ledger, scratch, representations) == audit.head()
    assert rows_of(audit.view) == rows_of(scratch)
    assert audit.position() == audit.head()
    verification = verify(audit.world)
    assert (verification["mismatches"], verification["position"]) == ([], audit.head())


# Rebuilding the read models.


@given("the API answers reads from the read models")
def api_reads_from_views(audit: Audit) -> None:
    """The app as ``daifuku serve`` builds it by default: reads from the views, the ledger
    answering whenever a view cannot."""
    backend: Backend = audit.world.client.application.extensions[EXTENSION]
    app = create_app(
        backend.ledger,
        backend.keys,
        token_secret=backend.token_secret,
        clock=backend.clock,
        views=audit.open_view(),
    )
    audit.world.client = app.test_client()


@given(step("the ledger holds the members {members} and the orders {orders}"))
def ledger_holds(audit: Audit, members: str, orders: str) -> None:
    expected = (re.findall(r'"([^"]+)"', members), re.findall(r'"([^"]+)"', orders))
    assert logged(audit.world) == expected


@given("every member's status and the analytics have been noted")
def note_statuses(audit: Audit) -> None:
    members, orders = logged(audit.world)
    audit.reads = storefront_reads(audit)
    served = {path for path, (source, _) in audit.reads.items() if source == "view"}
    assert served == set(audit.reads), f"the ledger answered {set(audit.reads) - served}"
    audit.analytics = analytics(audit.world)
    view = audit.view
    audit.rows = rows_of(view)
    assert [row.member_id for row in view.all()] == members
    assert [row.order_id for row in view.all_purchases()] == orders


@when("the read models are deleted")
def read_models_deleted(audit: Audit) -> None:
    audit.view.delete_all()


@then("the member-status view is empty and has read nothing of the ledger")
def view_is_empty(audit: Audit) -> None:
    view = audit.view
    assert list(view.all()) == [] and list(view.all_purchases()) == []
    assert view.max_tracking_id(audit.world.ledger.name) in (None, 0)


@then("meanwhile the ledger answers every read as the read models did")
def ledger_answers_meanwhile(audit: Audit) -> None:
    found = storefront_reads(audit)
    assert found == {path: ("ledger", body) for path, (_, body) in audit.reads.items()}


@when("the history is replayed")
def history_replayed(audit: Audit) -> None:
    assert replay(audit.world.ledger, audit.view, representations) == audit.head()


@then("every member's status, referrals and purchases read as noted, from the read models")
def statuses_unchanged(audit: Audit) -> None:
    assert storefront_reads(audit) == audit.reads


@then("the analytics are the ones noted")
def analytics_unchanged(audit: Audit) -> None:
    assert analytics(audit.world) == audit.analytics


@then("the member-status view holds the rows it held before, as of the last event")
def rows_unchanged(audit: Audit) -> None:
    assert rows_of(audit.view) == audit.rows
    assert audit.position() == audit.head()


# The export.


def export_line_of(lines: list[str], order_id: str) -> int:
    """The 0-based index of the line that records the purchase."""
    found = [
        index
        for index, line in enumerate(lines)
        if json.loads(line).get("type") == "PurchaseRecorded"
        and json.loads(line)["data"].get("order_id") == order_id
    ]
    assert len(found) == 1, found
    return found[0]


@when("the auditor exports the ledger")
def auditor_exports(audit: Audit) -> None:
    response = audit.world.call("GET", "/v1/audit/export", "auditor")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/x-ndjson"
    audit.export = response.get_data(as_text=True).splitlines()


@then("the export verifies offline: one line per event of the log, then the summary")
def export_verifies(audit: Audit, capsys: pytest.CaptureFixture[str]) -> None:
    head = audit.head()
    records = [json.loads(line) for line in audit.export]
    assert [r["position"] for r in records[:-1]] == list(range(1, head + 1))
    assert records[-1]["kind"] == "summary" and records[-1]["count"] == head
    result = verify_lines(audit.export)
    assert (result.ok, result.events, result.broken_at) == (True, head, None), result
    assert result.head_sha256 == records[-1]["head_sha256"]
    assert verify_export_command(audit) == 0
    assert capsys.readouterr().out.startswith(f"OK: {head} events")


def change_amount(audit: Audit, order_id: str, amount: str, reseal: bool) -> None:
    index = export_line_of(audit.export, order_id)
    record = json.loads(audit.export[index])
    assert record["data"]["amount"] != amount, record
    record["data"]["amount"] = amount
    if reseal:
        record.pop("sha256")
        record["sha256"] = sha256(canonical(record))
    audit.export[index] = canonical(record)
    audit.changed_line = index + 1


@when(step('the amount of purchase "{order_id:q}" is changed to "{amount:q}" in the export'))
def amount_changed(audit: Audit, order_id: str, amount: str) -> None:
    change_amount(audit, order_id, amount, reseal=False)


@when(
    step(
        'the amount of purchase "{order_id:q}" is changed to "{amount:q}" in the export '
        "and the line resealed"
    )
)
def amount_changed_and_resealed(audit: Audit, order_id: str, amount: str) -> None:
    change_amount(audit, order_id, amount, reseal=True)


@pytest.fixture
def broken_at() -> list[int]:
    """The line at which the offline verification found the chain broken."""
    return []


@then(
    step(
        "the offline verification finds the chain broken at the line {where} purchase "
        '"{order_id:q}": "{reason:q}"'
    )
)
def chain_broken(
    audit: Audit, broken_at: list[int], where: str, order_id: str, reason: str
) -> None:
    offsets = {"of": 0, "after": 1}
    assert where in offsets, where
    assert audit.changed_line == export_line_of(audit.export, order_id) + 1
    line = audit.changed_line + offsets[where]
    result = verify_lines(audit.export)
    assert (result.ok, result.broken_at, result.reason) == (False, line, reason), result
    assert result.events == line - 1, result  # every line before it is an event that checks out
    broken_at[:] = [line]


@then("the verify-export command says the same and fails")
def command_says_broken(
    audit: Audit, broken_at: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    (line,) = broken_at
    capsys.readouterr()
    assert verify_export_command(audit) == 1
    assert capsys.readouterr().out.startswith(f"BROKEN at line {line}: ")


def verify_export_command(audit: Audit) -> int:
    """``daifuku audit verify-export FILE`` on the export as the auditor saved it."""
    path = audit.tmp_path / "export.jsonl"
    path.write_text("\n".join(audit.export) + "\n", encoding="utf-8")
    return main(["audit", "verify-export", str(path)])


# The verification.


def jobs(world: World) -> VerificationJobs:
    backend: Backend = world.client.application.extensions[EXTENSION]
    return backend.verifications


def start_verification(world: World) -> dict[str, Any]:
    response = world.call("POST", "/v1/audit/verifications", "auditor")
    found: dict[str, Any] = response.get_json()
    assert response.status_code == 202, found
    assert response.headers["Location"] == f"/v1/audit/verifications/{found['id']}"
    return found


def look_at_verification(world: World, job_id: str) -> dict[str, Any]:
    response = world.call("GET", f"/v1/audit/verifications/{job_id}", "auditor")
    found: dict[str, Any] = response.get_json()
    assert response.status_code == 200, found
    return found


def verify(world: World) -> dict[str, Any]:
    """Start a verification, wait for its thread to end, and read what it found."""
    job_id = start_verification(world)["id"]
    jobs(world).wait(job_id, timeout=60)
    found = look_at_verification(world, job_id)
    assert found["status"] == "done", found
    return found


class HeldVerification:
    """The real verification, held after its first progress report until ``release``."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.job_id = ""

    def __call__(
        self,
        ledger: Ledger,
        live: MemberStatusView,
        shapes: Shapes,
        progress: ProgressReport,
        stop: threading.Event,
    ) -> Verification:
        def report(done: int, total: int, seconds: float) -> None:
            progress(done, total, seconds)
            self.reached.set()
            self.release.wait(60)

        return verify_member_status(ledger, live, shapes, report, stop)


@pytest.fixture
def verification() -> dict[str, Any]:
    """The auditor's last verification."""
    return {}


@pytest.fixture
def held() -> Iterator[HeldVerification]:
    found = HeldVerification()
    yield found
    found.release.set()


@when("the auditor asks for a verification")
def auditor_verifies(audit: Audit, verification: dict[str, Any]) -> None:
    verification.clear()
    verification.update(verify(audit.world))


@when("the auditor starts a verification that is held after replaying its first events")
def auditor_starts_held(audit: Audit, held: HeldVerification) -> None:
    jobs(audit.world).verify = held
    held.job_id = start_verification(audit.world)["id"]
    assert held.reached.wait(60)


@then("the verification is running, with how many events it has replayed out of how many")
def verification_running(audit: Audit, held: HeldVerification) -> None:
    found = look_at_verification(audit.world, held.job_id)
    head = audit.head()
    assert found["status"] == "running", found
    progress = found["progress"]
    assert (progress["events_done"], progress["events_total"]) == (head, head), found
    assert progress["finished_at"] is None and "mismatches" not in found, found


@then("the auditor asking again is given the same verification")
def same_verification(audit: Audit, held: HeldVerification) -> None:
    assert start_verification(audit.world)["id"] == held.job_id


@when("the verification is let go and finishes")
def verification_let_go(audit: Audit, held: HeldVerification, verification: dict[str, Any]) -> None:
    held.release.set()
    jobs(audit.world).wait(held.job_id, timeout=60)
    verification.clear()
    verification.update(look_at_verification(audit.world, held.job_id))
    assert verification["status"] == "done", verification


@then("the verification replayed every event of the log and found no difference")
def verification_clean(audit: Audit, verification: dict[str, Any]) -> None:
    head = audit.head()
    assert verification["mismatches"] == [], verification
    assert (verification["events"], verification["position"]) == (head, head), verification
    assert verification["members"] == len(member_ids(audit.world)), verification


def change_view_table(
    database_url: str,
    statement: LiteralString,
    sqlite_params: tuple[Any, ...],
    postgres_params: tuple[Any, ...],
) -> int:
    """Run ``statement`` ({table} is the member-status table) through a connection of its own to
    the scenario's database, as someone with a SQL client would; return the rows it changed."""
    database = Database.from_url(database_url)
    if database.kind == "sqlite":
        with closing(sqlite3.connect(database.path)) as conn, conn:
            changed: int = conn.execute(
                statement.format(table=VIEW_TABLE).replace("%s", "?"), sqlite_params
            ).rowcount
            return changed
    with psycopg.connect(
        host=database.host,
        port=database.port,
        user=database.user,
        password=database.password,
        dbname=database.name,
    ) as pg:
        table = sql.Identifier(database.schema or "public", VIEW_TABLE)
        return pg.execute(sql.SQL(statement).format(table=table), postgres_params).rowcount


@when(
    step(
        'someone sets "{name:q}" of "{member_id:q}" to {value} directly in the member-status table'
    )
)
def corrupt_row(audit: Audit, database_url: str, name: str, member_id: str, value: str) -> None:
    row = audit.view.row(member_id)
    assert row is not None, member_id
    audit.before = flatten(row.status)
    assert name in audit.before and audit.before[name] != json.loads(value), audit.before
    if Database.from_url(database_url).kind == "sqlite":
        statement: LiteralString = (
            "UPDATE {table} SET status = json_set(status, %s, json(%s)) WHERE member_id = %s"
        )
    else:
        statement = (
            "UPDATE {table} SET status = jsonb_set(status, %s::text[], %s::jsonb) "
            "WHERE member_id = %s"
        )
    sqlite_params = ("$." + name, value, member_id)
    postgres_params = (name.split("."), value, member_id)
    assert change_view_table(database_url, statement, sqlite_params, postgres_params) == 1
    changed = audit.view.row(member_id)
    assert changed is not None and flatten(changed.status)[name] == json.loads(value)


@when(step('someone deletes the row of "{member_id:q}" directly from the member-status table'))
def delete_row(audit: Audit, database_url: str, member_id: str) -> None:
    statement = "DELETE FROM {table} WHERE member_id = %s"
    assert change_view_table(database_url, statement, (member_id,), (member_id,)) == 1
    assert audit.view.row(member_id) is None


@then(
    step(
        'the verification reports only "{name:q}" of "{member_id:q}": {value} in the live view, '
        "the value the view held before in the replay"
    )
)
def verification_names_field(
    audit: Audit, verification: dict[str, Any], name: str, member_id: str, value: str
) -> None:
    expected = {"member_id": member_id, "field": name, "live": json.loads(value)}
    assert verification["mismatches"] == [expected | {"replayed": audit.before[name]}], verification
    assert verification["position"] == audit.head(), verification


@then(
    step(
        'the verification reports only that the row of "{member_id:q}" is missing in the live view'
    )
)
def verification_names_missing_row(
    audit: Audit, verification: dict[str, Any], member_id: str
) -> None:
    expected = {"member_id": member_id, "field": "row", "live": MISSING_LIVE, "replayed": "present"}
    assert verification["mismatches"] == [expected], verification
    assert verification["position"] == audit.head(), verification


@then("the member-status view is exactly as of its position: the verification finds no difference")
def view_as_of_its_position(audit: Audit) -> None:
    position = audit.position()
    found = verify(audit.world)
    assert (found["mismatches"], found["position"]) == ([], position), found
    assert found["events"] == position, found
