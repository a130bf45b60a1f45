"""GET /v1/audit/export and `daifuku audit verify-export`: a chain an outsider can check."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.export import verify_lines
from api.cli import main
from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import Server


def _export(server: Server) -> list[str]:
    server.enrol("ann")
    server.purchase("A-1", "ann", "120.00")
    server.purchase("A-2", "ann", "600.00")
    response = server.call("GET", "/v1/audit/export", "auditor")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    return response.get_data(as_text=True).splitlines()


def test_the_export_is_every_event_then_a_summary_and_it_verifies(server: Server) -> None:
    lines = _export(server)
    records = [json.loads(line) for line in lines]
    log = server.call("GET", "/v1/events?limit=1000", "auditor").json["items"]
    assert [r["position"] for r in records[:-1]] == [item["position"] for item in log]
    assert records[-1]["kind"] == "summary" and records[-1]["count"] == len(log)
    assert records[0]["prev_sha256"] == "0" * 64
    result = verify_lines(lines)
    assert result.ok and result.events == len(log)
    assert result.head_sha256 == records[-1]["head_sha256"]


def test_a_tampered_line_is_found_at_its_line(server: Server) -> None:
    lines = _export(server)
    record = json.loads(lines[2])
    record["data"]["points"] = 999_999  # keeps its old sha256
    tampered = [*lines[:2], json.dumps(record), *lines[3:]]
    result = verify_lines(tampered)
    assert not result.ok and result.broken_at == 3

    dropped = lines[:1] + lines[2:]
    assert verify_lines(dropped).broken_at == 2
    assert verify_lines(lines[:-1]).reason == "the summary line is missing"


def test_verify_export_command_says_where_the_chain_breaks(
    server: Server, tmp_path: Path, capsys: object
) -> None:
    lines = _export(server)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["audit", "verify-export", str(good)]) == 0

    record = json.loads(lines[1])
    record["type"] = "Forged"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n", encoding="utf-8")
    assert main(["audit", "verify-export", str(bad)]) == 1
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "BROKEN at line 2" in out


def test_only_auditors_and_admins_export(server: Server) -> None:
    assert server.call("GET", "/v1/audit/export", "admin").status_code == 200
    assert_problem(server.call("GET", "/v1/audit/export", "storefront"), 403)
    assert_problem(server.client.get("/v1/audit/export"), 401)
