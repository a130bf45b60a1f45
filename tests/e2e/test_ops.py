"""Health, metrics and the OpenAPI document: no credentials needed."""

from __future__ import annotations

import re

import pytest

from tests.e2e.assertions import assert_problem
from tests.e2e.conftest import Server

# Every path of API.md that this server implements so far, as OpenAPI writes it.
CONTRACT_PATHS = {
    "/v1/members": {"post"},
    "/v1/members/{member_id}": {"get"},
    "/v1/members/{member_id}/events": {"get"},
    "/v1/members/{member_id}/tokens": {"post"},
    "/v1/members/{member_id}/redemptions": {"post"},
    "/v1/redemptions/{redemption_id}/cancellation": {"post"},
    "/v1/purchases": {"post"},
    "/v1/purchases/{order_id}": {"get"},
    "/v1/purchases/{order_id}/refunds": {"post"},
    "/v1/program": {"get", "put"},
    "/healthz": {"get"},
    "/metrics": {"get"},
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
    assert 'daifuku_http_requests_total{method="GET",endpoint="/healthz",status="200"} 1' in text
    assert (
        'daifuku_http_requests_total{method="GET",endpoint="/v1/members/<id:member_id>",'
        'status="404"} 1'
    ) in text
    assert 'endpoint="/v1/program",status="401"} 1' in text
    assert "# TYPE daifuku_http_request_duration_seconds histogram" in text
    assert re.search(
        r'daifuku_http_request_duration_seconds_count\{method="GET",endpoint="/healthz"\} 1', text
    )
    assert re.search(r"^daifuku_http_requests_in_flight 1$", text, re.MULTILINE)
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{.*\})? [0-9.e+-]+$", line), line


def test_the_openapi_document_lists_every_path_of_the_contract(server: Server) -> None:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    for path, methods in CONTRACT_PATHS.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, spec["paths"][path].keys())
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
