"""Health, metrics and the OpenAPI document: no credentials needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import Server
from tests.scrapes import names, value

# The contract lives in the team's shared folder beside the checkout; a clean clone elsewhere
# (CI) reads the copy kept in the repository, which a test below keeps equal to it.
SHARED_API_MD = Path(__file__).resolve().parents[3] / "shared" / "API.md"
COPIED_API_MD = Path(__file__).resolve().parents[1] / "contract" / "API.md"
API_MD = SHARED_API_MD if SHARED_API_MD.is_file() else COPIED_API_MD
# One endpoint as API.md's table writes it: `GET /v1/program`, `GET/PATCH/DELETE /v1/webhooks/{id}`.
ENDPOINT = re.compile(r"`([A-Z]+(?:/[A-Z]+)*) (/[^`\s]*)`")
PARAMETER = re.compile(r"\{[^}]*\}|<[^>]*>")  # OpenAPI and API.md {name}, Flask <type:name>

# Endpoints of API.md that a later issue builds, by issue. Each leaves this table in the change
# that serves it: the test fails while a served endpoint is still listed here.
LATER: dict[int, set[str]] = {}
# The OpenAPI document does not describe itself, nor its browsable page.
SELF_DESCRIBED = {"GET /openapi.json", "GET /docs"}
# Served beyond API.md: Flask's route for static files (the app has none, so it answers 404),
# and the Swagger UI files the /docs page loads.
EXTRAS = {"GET /static/{}", "GET /docs/assets/{}"}
# The page's scripts and style sheets: <script src=...>, <link href=...>.
ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)


def endpoint(method: str, path: str) -> str:
    """``METHOD /path`` with every path parameter as ``{}``: their names are not the contract."""
    return f"{method.upper()} {PARAMETER.sub('{}', path)}"


def contract() -> set[str]:
    """Every endpoint of the table under "## Endpoints" in ../shared/API.md."""
    assert API_MD.is_file(), f"{API_MD}: the HTTP contract this test checks the app against"
    text = API_MD.read_text(encoding="utf-8")
    section = text.split("\n## Endpoints\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    found: set[str] = set()
    for row in rows:
        named = ENDPOINT.findall(row.split("|")[1])
        assert named, f"API.md names no endpoint in {row!r}"
        for methods, path in named:
            found |= {endpoint(method, path) for method in methods.split("/")}
    assert len(rows) >= 30 and "POST /v1/purchases" in found, rows  # the table was read
    return found


def routes(server: Server) -> set[str]:
    """What the app answers, method by method, as its URL map says."""
    return {
        endpoint(method, rule.rule)
        for rule in server.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


def test_healthz_says_ok_when_the_database_answers(server: Server) -> None:
    response = server.client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_does_not_answer(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(server.keys, "ping", unreachable)
    assert_problem(server.client.get("/healthz"), 503)


def test_metrics_count_requests_by_method_route_and_status(server: Server) -> None:
    server.client.get("/healthz")
    server.call("GET", "/v1/members/nobody", "auditor")
    server.client.get("/v1/program")
    response = server.client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    requests = "daifuku_http_requests_total"
    assert value(text, requests, method="GET", endpoint="/healthz", status="200") == 1
    member = "/v1/members/<id:member_id>"
    assert value(text, requests, method="GET", endpoint=member, status="404") == 1
    assert value(text, requests, method="GET", endpoint="/v1/program", status="401") == 1
    assert "# TYPE daifuku_http_request_duration_seconds histogram" in text
    latency = "daifuku_http_request_duration_seconds"
    assert value(text, f"{latency}_count", method="GET", endpoint="/healthz") == 1
    assert value(text, f"{latency}_bucket", method="GET", endpoint="/healthz", le="+Inf") == 1
    assert value(text, "daifuku_http_requests_in_flight") == 1  # this scrape
    assert value(text, "daifuku_scheduler_runs_total") == 0
    assert value(text, "daifuku_ledger_events_appended_total") == (
        server.ledger.recorder.max_notification_id()
    )
    assert value(text, "daifuku_ledger_figures_up") == 1
    assert "daifuku_projection_lag_events" not in names(text)  # no read models: no projection
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{.*\})? [0-9.e+-]+$", line), line
    again = server.client.get("/metrics").get_data(as_text=True)
    assert value(again, requests, method="GET", endpoint="/metrics", status="200") == 1


def test_metrics_speak_openmetrics_to_a_scraper_that_asks_for_it(server: Server) -> None:
    response = server.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.mimetype == "application/openmetrics-text"
    text = response.get_data(as_text=True)
    assert text.endswith("# EOF\n")
    assert "# TYPE daifuku_http_requests counter" in text


def test_metrics_still_answer_when_the_database_does_not(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(server.ledger.recorder, "max_notification_id", unreachable)
    response = server.client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert value(text, "daifuku_ledger_figures_up") == 0
    assert "daifuku_ledger_events_appended_total" not in names(text)
    assert value(text, "daifuku_http_requests_in_flight") == 1


def test_the_app_serves_and_documents_the_whole_contract_of_api_md(server: Server) -> None:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    documented = {
        endpoint(method, path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method != "parameters"  # the path's parameters, shared by its operations
    }
    promised = contract()
    later = {endpoint(*text.split(" ")) for endpoints in LATER.values() for text in endpoints}
    assert later <= promised, f"not in API.md any more: {later - promised}"
    # Every endpoint of API.md but the later ones is in the OpenAPI document, and nothing else.
    expected = promised - later - SELF_DESCRIBED
    assert documented - expected == set(), "documented but not in API.md (or listed as later)"
    assert expected - documented == set(), "in API.md but not in the OpenAPI document"
    # The app answers exactly what it documents, and the documents themselves.
    served = routes(server)
    assert served == documented | SELF_DESCRIBED | EXTRAS, served ^ (documented | SELF_DESCRIBED)
    assert server.client.get("/docs").status_code == 200
    assert_problem(server.client.get("/static/openapi.json"), 404)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_the_openapi_document_describes_bodies_and_errors(server: Server) -> None:
    spec = server.client.get("/openapi.json").json
    post = spec["paths"]["/v1/purchases"]["post"]
    request = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][request.rsplit("/", 1)[1]]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["amount"]["type"] == "string"
    assert {"order_id", "member_id", "amount", "currency"} <= set(schema["required"])
    assert set(post["responses"]) >= {"200", "201", "401", "403", "422"}
    created = post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert (
        "points_awarded" in spec["components"]["schemas"][created.rsplit("/", 1)[1]]["properties"]
    )
    problem = spec["components"]["responses"]["UNPROCESSABLE_ENTITY"]["content"]
    assert "application/problem+json" in problem
    status = spec["paths"]["/v1/members/{member_id}"]["get"]
    assert any(p["name"] == "as_of" for p in status["parameters"])
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_docs_is_a_browsable_page(server: Server) -> None:
    response = server.client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "/openapi.json" in response.get_data(as_text=True)


def test_docs_loads_nothing_from_another_host(server: Server) -> None:
    page = server.client.get("/docs").get_data(as_text=True)
    assets = ASSET.findall(page)
    assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
    }, page
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        response = server.client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.data) > 1000, asset
    # No other host named anywhere in the page (Swagger UI's validator badge is off too).
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), page
    assert '"validatorUrl": null' in page


def test_docs_assets_are_files_of_the_bundle_only(server: Server) -> None:
    assert server.client.get("/docs/assets/no-such-file.js").status_code == 404
    assert server.client.get("/docs/assets/../../pyproject.toml").status_code == 404


def test_the_repository_keeps_the_shared_contract_as_it_is() -> None:
    if not SHARED_API_MD.is_file():
        pytest.skip(f"no {SHARED_API_MD} beside this checkout: the copy is the contract here")
    assert COPIED_API_MD.read_text() == SHARED_API_MD.read_text(), (
        f"copy {SHARED_API_MD} to {COPIED_API_MD}"
    )
