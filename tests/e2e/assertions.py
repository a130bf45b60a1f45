"""What every error response must look like."""

from __future__ import annotations

from typing import Any

from werkzeug.test import TestResponse


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem document with this status."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return dict(body)


def assert_invalid(response: TestResponse, *fields: str) -> dict[str, list[str]]:
    """A 422 whose ``errors`` name exactly these fields (among possibly others)."""
    body = assert_problem(response, 422)
    errors = body.get("errors")
    assert isinstance(errors, dict), body
    for field in fields:
        assert field in errors, (field, errors)
        assert errors[field] and all(isinstance(m, str) for m in errors[field])
    return errors
