"""POST /v1/imports on SQLite and PostgreSQL, and ``daifuku import`` into a store or a server.

PROGRAM.md, Histories from before Daifuku; API.md, Import records.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from adapters.settings import Settings
from api.bootstrap import bootstrap
from api.cli import main
from domain.clock import FixedClock
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import Server
from tests.e2e.test_revocation_processes import call, serving
from tests.histories import (
    lines,
    member,
    member_ids,
    purchase,
    redemption,
    refund,
    shop_history,
    statuses,
)

NDJSON = "application/x-ndjson"
PROBLEMS = "https://daifuku.dev/problems/"


HISTORY = [
    member("c-1"),
    purchase("o-1", "c-1", "420.00", "2023-04-02T12:00:00+09:00"),
    refund("r-1", "o-1", "20.00", "2023-04-20T09:00:00+09:00"),
    redemption("x-1", "c-1", 100, "2023-06-01T09:00:00+09:00"),
    member("c-2", "2024-01-10T09:00:00+00:00"),
    purchase("o-2", "c-2", "99.99", "2024-02-01T09:00:00+00:00"),
]


def post_import(
    server: Server, body: str | bytes, as_: str = "storefront", query: str = "?name=shop"
) -> TestResponse:
    return server.call(
        "POST", f"/v1/imports{query}", as_, data=body, headers={"Content-Type": NDJSON}
    )


def results(response: TestResponse) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == NDJSON
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def body_of(records: list[dict[str, Any] | str]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def log_head(server: Server) -> int:
    return int(server.ledger.recorder.max_notification_id() or 0)


def member_events(server: Server, member_id: str) -> list[dict[str, Any]]:
    response = server.call("GET", f"/v1/members/{member_id}/events?limit=1000", "auditor")
    assert response.status_code == 200, response.json
    assert response.json is not None and response.json["next"] is None
    items: list[dict[str, Any]] = response.json["items"]
    return items


# POST /v1/imports


def test_results_come_one_per_record_in_order_and_a_repeat_batch_is_present(
    server: Server,
) -> None:
    body = body_of([*HISTORY[:3], "", "   ", *HISTORY[3:]])
    first = results(post_import(server, body))
    kinds = ["member", "purchase", "refund", "redemption", "member", "purchase"]
    ids = ["c-1", "o-1", "r-1", "x-1", "c-2", "o-2"]
    # Blank lines are not records, but they keep their numbers.
    assert first == [
        {"line": line, "status": "applied", "id": ident, "kind": kind}
        for line, ident, kind in zip([1, 2, 3, 6, 7, 8], ids, kinds, strict=True)
    ]
    status = server.call("GET", "/v1/members/c-1", "storefront").json
    assert status is not None
    # 420 points, ceil(420 x 20 / 420) = 20 clawed back, 100 redeemed, all expired by now
    points = status["points"]
    assert (points["lifetime_earned"], points["clawed_back"], points["redeemed"]) == (420, 20, 100)
    assert points["expired"] == 300 and points["available"] == 0

    head = log_head(server)
    again = results(post_import(server, body))
    assert again == [dict(result, status="present") for result in first]
    assert log_head(server) == head


def test_each_bad_line_gets_the_problem_a_single_request_would_and_changes_nothing(
    server: Server,
) -> None:
    good = [member("c-1"), purchase("o-1", "c-1", "42.00", "2023-04-02T12:00:00+09:00")]
    bad: list[tuple[dict[str, Any] | str, str, int, list[str]]] = [
        # (line, problem type, status, fields named)
        ('{"kind": "member", "member_id": "c-9"', "about:blank", 400, []),
        ('["not", "an", "object"]', "about:blank", 400, []),
        ({"kind": "gift", "member_id": "c-1"}, PROBLEMS + "invalid-input", 422, ["kind"]),
        ({**member("c-3"), "member_id": None}, PROBLEMS + "invalid-input", 422, ["member_id"]),
        (
            {k: v for k, v in purchase("o-2", "c-1", "1.00", "2023-05-01T00:00:00Z").items()
             if k != "order_id"},
            PROBLEMS + "invalid-input", 422, ["order_id"],
        ),
        (
            {k: v for k, v in refund("r-0", "o-1", "1.00", "2023-05-01T00:00:00Z").items()
             if k != "refund_id"},
            PROBLEMS + "invalid-input", 422, ["refund_id"],
        ),
        (
            purchase("o-3", "nobody", "10.00", "2023-05-01T00:00:00+00:00"),
            PROBLEMS + "unknown-member", 404, [],
        ),
        (
            refund("r-1", "o-1", "42.01", "2023-05-01T00:00:00+00:00"),
            PROBLEMS + "over-refund", 422, ["amount"],
        ),
        (
            {**purchase("o-4", "c-1", "10.00", "2023-05-01T00:00:00+00:00"), "currency": "EUR"},
            PROBLEMS + "wrong-currency", 422, ["currency"],
        ),
        (
            purchase("o-5", "c-1", "10.00", "2023-05-01T00:00:00"),
            PROBLEMS + "invalid-input", 422, ["occurred_at"],
        ),
        (
            member("c-4", "2026-11-23T10:06:00+00:00"),
            PROBLEMS + "enrolled-at-out-of-range", 422, ["enrolled_at"],
        ),
        (
            refund("r-2", "o-404", "1.00", "2023-05-01T00:00:00+00:00"),
            PROBLEMS + "unknown-order", 404, [],
        ),
        # Refused after o-1's lot fell due (2023-05-02): that change waits for the next record.
        (
            redemption("x-1", "c-1", 1000, "2023-05-10T00:00:00+00:00"),
            PROBLEMS + "insufficient-points", 422, ["points"],
        ),
    ]  # fmt: skip
    tail = purchase("o-6", "c-1", "58.00", "2023-06-01T00:00:00+00:00")
    body = body_of([*good, *(line for line, *_ in bad), tail])
    found = results(post_import(server, body))

    assert [(r["line"], r["status"]) for r in found] == [
        (1, "applied"),
        (2, "applied"),
        *((n, "rejected") for n in range(3, 3 + len(bad))),
        (3 + len(bad), "applied"),
    ]
    for result, (_, kind, status, named) in zip(found[2:-1], bad, strict=True):
        problem = result["problem"]
        assert (problem["type"], problem["status"]) == (kind, status), result
        assert sorted(problem.get("errors") or {}) == named, result
        assert problem["detail"] and problem["title"], result
    by_line = {r["line"]: r for r in found}
    assert by_line[5]["id"] is None and by_line[9]["id"] == "o-3"

    # The same problems as the single requests (with the import's time fields).
    singles = {
        9: server.call(
            "POST", "/v1/purchases", "storefront",
            {"order_id": "o-3", "member_id": "nobody", "amount": "10.00", "currency": "USD"},
        ),
        10: server.call(
            "POST", "/v1/purchases/o-1/refunds", "storefront",
            {"refund_id": "r-1", "amount": "42.01"},
        ),
        11: server.call(
            "POST", "/v1/purchases", "storefront",
            {"order_id": "o-4", "member_id": "c-1", "amount": "10.00", "currency": "EUR"},
        ),
        12: server.call(
            "POST", "/v1/purchases", "storefront",
            {"order_id": "o-5", "member_id": "c-1", "amount": "10.00", "currency": "USD",
             "occurred_at": "2023-05-01T00:00:00"},
        ),
        13: server.call(
            "POST", "/v1/members", "storefront",
            {"member_id": "c-4", "email": "c-4@example.com",
             "enrolled_at": "2026-11-23T10:06:00+00:00"},
        ),
        14: server.call("POST", "/v1/purchases/o-404/refunds", "storefront", {"refund_id": "r-2"}),
    }  # fmt: skip
    for line, response in singles.items():
        assert_problem(response, by_line[line]["problem"]["status"])
        assert response.json == by_line[line]["problem"], line

    # Nothing of the rejected lines was recorded; the good ones landed.
    tail_cause = f"import:shop:{3 + len(bad)}"
    assert [(e["type"], e["data"]["cause"]) for e in member_events(server, "c-1")] == [
        ("Enrolled", "import:shop:1"),
        ("PurchaseRecorded", "import:shop:2"),
        ("PointsBecameAvailable", tail_cause),
        ("PurchaseRecorded", tail_cause),
    ]
    purchase_o1 = server.call("GET", "/v1/purchases/o-1", "storefront").json
    assert purchase_o1 is not None and purchase_o1["refunds"] == []
    for member_id in ("c-3", "c-4", "c-9", "nobody"):
        assert server.call("GET", f"/v1/members/{member_id}", "storefront").status_code == 404
    for order_id in ("o-2", "o-3", "o-4", "o-5"):
        assert server.call("GET", f"/v1/purchases/{order_id}", "storefront").status_code == 404


def test_more_than_10000_lines_is_413_and_no_json_object_line_400_changing_nothing(
    server: Server,
) -> None:
    head = log_head(server)
    record = json.dumps(member("c-1")) + "\n"
    problem = assert_problem(post_import(server, record + "\n" * 10_000), 413)
    assert "10,001" in problem["detail"]
    for body in ("\n\n  \n", "id,amount\nA-1,42.00\n", '"a string"\n[1]\n'):
        assert_problem(post_import(server, body), 400)
    assert log_head(server) == head
    # 10,000 lines, blank ones included, is a batch.
    assert [r["status"] for r in results(post_import(server, record + "\n" * 9_999))] == ["applied"]


def test_only_a_storefront_or_an_admin_may_import(server: Server) -> None:
    body = body_of([member("c-1")])
    assert_problem(post_import(server, body, as_="auditor"), 403)
    response = server.client.post("/v1/imports", data=body, headers={"Content-Type": NDJSON})
    assert_problem(response, 401)
    assert server.call("GET", "/v1/members/c-1", "storefront").status_code == 404
    assert results(post_import(server, body, as_="admin"))[0]["status"] == "applied"


def test_events_say_they_were_imported_by_which_import_line_and_key(server: Server) -> None:
    results(post_import(server, body_of(HISTORY), query="?name=old-shop.2019&batch=2"))
    (key,) = [k for k in server.keys.page() if k.name == "e2e storefront"]
    actor = {"kind": "import", "id": key.key_id, "name": "old-shop.2019"}
    events = member_events(server, "c-1")
    assert [e["type"] for e in events if e["type"] != "PointsBecameAvailable"] == [
        "Enrolled",
        "PurchaseRecorded",
        "PurchaseRefunded",
        "PointsRedeemed",
    ]
    # A time-driven change that fell due between records says which record brought it in.
    assert [(e["type"], e["data"]["cause"]) for e in events] == [
        ("Enrolled", "import:old-shop.2019:1"),
        ("PurchaseRecorded", "import:old-shop.2019:2"),
        ("PurchaseRefunded", "import:old-shop.2019:3"),
        ("PointsBecameAvailable", "import:old-shop.2019:4"),
        ("PointsRedeemed", "import:old-shop.2019:4"),
    ]
    assert all(e["actor"] == actor for e in events), events
    assert events[1]["occurred_at"] == "2023-04-02T12:00:00+09:00"
    log = server.call("GET", "/v1/events?limit=1000", "auditor").json
    assert log is not None
    imported = [e for e in log["items"] if e["member_id"] in ("c-1", "c-2")]
    assert imported and all(
        e["data"]["cause"].startswith("import:old-shop.2019:") for e in imported
    )


def test_an_imported_purchase_older_than_two_years_is_accepted_a_live_one_refused(
    server: Server,
) -> None:
    # The server's clock is 2026-11-23: 2024-01-01 is almost three years ago.
    old = purchase("o-old", "c-1", "50.00", "2024-01-01T00:00:00+00:00")
    found = results(post_import(server, body_of([member("c-1"), old])))
    assert [r["status"] for r in found] == ["applied", "applied"]
    live = {k: v for k, v in old.items() if k != "kind"} | {"order_id": "o-live"}
    response = server.call("POST", "/v1/purchases", "storefront", live)
    problem = assert_problem(response, 422)
    assert problem["type"] == PROBLEMS + "occurred-at-out-of-range", problem
    assert server.call("GET", "/v1/purchases/o-old", "storefront").status_code == 200


# daifuku import


@pytest.fixture
def direct(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DAIFUKU_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("DAIFUKU_SECRET_KEY", raising=False)
    monkeypatch.delenv("DAIFUKU_MASTER_KEY", raising=False)
    return sqlite_url


def write_file(path: Path, records: list[dict[str, Any] | str]) -> Path:
    path.write_text(body_of(records), encoding="utf-8")
    return path


def status_of(database_url: str, member_ids: list[str], at: datetime) -> dict[str, Any]:
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": database_url})
    ledger, keys, _ = bootstrap(settings, clock=FixedClock(at))
    try:
        return statuses(ledger, member_ids)
    finally:
        ledger.close()
        keys.close()


def test_daifuku_import_into_the_store_reports_and_says_so_in_its_exit_code(
    direct: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = write_file(tmp_path / "old shop.jsonl", HISTORY)
    report_path = tmp_path / "report.json"
    assert main(["import", str(history), "--report-json", str(report_path), "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Import old-shop: 6 records read, 6 applied, 0 already present, 0 rejected" in printed
    report = json.loads(report_path.read_text())
    assert {k: report[k] for k in ("name", "read", "applied", "present", "rejected")} == {
        "name": "old-shop", "read": 6, "applied": 6, "present": 0, "rejected": 0,
    }  # fmt: skip
    assert report["by_kind"]["purchase"] == {"applied": 2, "present": 0, "rejected": 0}
    assert not (tmp_path / "old shop.jsonl.rejects.jsonl").exists()

    # Again, with a bad line: the others are present, the bad one is in the rejects file.
    over = refund("r-9", "o-2", "100.00", "2024-02-02T00:00:00+00:00")
    write_file(history, [*HISTORY, "{oops", over])
    rejects = tmp_path / "rejects.jsonl"
    argv = ["import", str(history), "--rejects", str(rejects), "--report-json", str(report_path)]
    assert main(argv) == 3
    printed = capsys.readouterr().out
    assert "6 already present, 2 rejected" in printed and str(rejects) in printed
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["problem"]["status"], r["text"]) for r in written] == [
        (7, 400, "{oops"),
        (8, 422, json.dumps(over)),
    ]
    assert written[1]["problem"]["type"] == PROBLEMS + "over-refund"
    assert json.loads(report_path.read_text())["rejected"] == 2

    now = datetime.now(UTC)
    found = status_of(direct, ["c-1", "c-2"], now)
    assert found["c-2"]["points"]["lifetime_earned"] == 99
    assert found["c-1"]["points"]["clawed_back"] == 20


def test_daifuku_import_of_no_json_lines_is_exit_2_and_imports_nothing(
    direct: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("order_id,amount\nA-1,42.00\n")
    assert main(["import", str(csv)]) == 2
    assert "no line is a JSON object" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["import", str(write_file(tmp_path / "a.jsonl", HISTORY)), "--url", "x"]) == 2
    settings = Settings.from_environ({"DAIFUKU_DATABASE_URL": direct})
    ledger, keys, _ = bootstrap(settings)
    try:
        log = ledger.event_log(0, 1000)
        assert log and [e for e in log if e["member_id"] is not None] == [], log
    finally:
        ledger.close()
        keys.close()


def test_daifuku_import_through_a_server_ends_as_a_direct_import(
    direct: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = shop_history(12, datetime(2022, 1, 3, 9, 0, tzinfo=UTC))
    history = tmp_path / "shop.jsonl"
    history.write_text("\n".join(lines(records)) + "\n")
    assert main(["import", str(history)]) == 0

    served = f"sqlite:///{tmp_path / 'served.db'}"
    report_path = tmp_path / "through.json"
    with serving(served) as (url, printed):
        (admin,) = [line.split()[-1] for line in printed if line.split()[0] == "admin"]
        status, created = call(
            f"{url}/v1/keys", admin, "POST", {"name": "migration", "role": "storefront"}
        )
        assert status == 201, created
        argv = ["import", str(history), "--url", url, "--key", created["secret"]]
        argv += ["--lines-per-request", "25", "--batch", "3", "--report-json", str(report_path)]
        assert main(argv) == 0
        assert main(argv) == 0  # again: everything present
    report = json.loads(report_path.read_text())
    assert (report["read"], report["present"], report["applied"]) == (len(records),) * 2 + (0,)
    capsys.readouterr()

    now = datetime.now(UTC)
    members = member_ids(records)
    assert status_of(served, members, now) == status_of(direct, members, now)
