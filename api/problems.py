"""Every error leaves as application/problem+json (RFC 9457), and never with a traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from domain.errors import Conflict, DomainError, InvalidInput, NotFound, RuleViolation

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_TYPES = "https://daifuku.dev/problems/"
INVALID_INPUT = "invalid-input"

log = logging.getLogger(__name__)


class Problem(Exception):
    """An error response the API decides on itself (not a domain refusal)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title
        self.errors = dict(errors) if errors is not None else None
        self.headers = dict(headers or {})


def invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        f"{field}: {message}",
        kind=INVALID_INPUT,
        title="Invalid input",
        errors={field: [message]},
    )


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        # about:blank means "nothing more than the status code says" (RFC 9457, 4.2.1).
        "type": PROBLEM_TYPES + kind if kind else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = dict(errors)
    response = current_app.response_class(
        current_app.json.dumps(body, separators=(",", ":")),
        status=status,
        mimetype=PROBLEM_MIMETYPE,
    )
    response.headers.update(headers or {})
    return response


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dicts as {"items.0.sku": [...]}."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = prefix if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
            for path, found in flatten(value, name).items():
                flat.setdefault(path, []).extend(found)
        return flat
    if isinstance(messages, list | tuple) and all(isinstance(m, str) for m in messages):
        return {prefix or "body": [str(m) for m in messages]}
    if isinstance(messages, list | tuple):
        flat = {}
        for message in messages:
            for path, found in flatten(message, prefix).items():
                flat.setdefault(path, []).extend(found)
        return flat
    return {prefix or "body": [str(messages)]}


def _summary(errors: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{path}: {' '.join(found)}" for path, found in errors.items())


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _sentence(name: str) -> str:
    words = _kebab(name).replace("-", " ")
    return words[:1].upper() + words[1:]


def handle_problem(error: Problem) -> Response:
    return problem_response(
        error.status,
        error.detail,
        kind=error.kind,
        title=error.title,
        errors=error.errors,
        headers=error.headers,
    )


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    data = getattr(error, "data", None) or {}
    if "messages" in data:
        # webargs: {"json": {...}} or {"query": {...}}; the location is not part of the path.
        messages = data["messages"]
        if isinstance(messages, Mapping) and len(messages) == 1:
            messages = next(iter(messages.values()))
        errors = flatten(messages)
        return problem_response(
            status,
            _summary(errors),
            kind=INVALID_INPUT,
            title="Invalid input",
            errors=errors,
            headers=headers | dict(data.get("headers") or {}),
        )
    detail = error.description or HTTPStatus(status).phrase
    return problem_response(status, detail, headers=headers)


def handle_domain_error(error: DomainError) -> Response:
    status = (
        404
        if isinstance(error, NotFound)
        else 409
        if isinstance(error, Conflict)
        else 422
        if isinstance(error, RuleViolation | InvalidInput)
        else 400
    )
    errors: dict[str, list[str]] | None = None
    if isinstance(error, InvalidInput):
        errors = error.errors
    elif error.field:
        errors = {error.field: [error.message]}
    name = type(error).__name__
    return problem_response(
        status, error.message, kind=_kebab(name), title=_sentence(name), errors=errors
    )


def handle_unavailable(error: Exception) -> Response:
    log.error("database unavailable: %s", error)
    return problem_response(
        503,
        "the ledger's database does not answer; try again shortly",
        kind="database-unavailable",
        title="Database unavailable",
        headers={"Retry-After": "5"},
    )


def handle_unexpected(error: Exception) -> Response:
    log.exception("unexpected error while answering a request")
    return problem_response(500, "an unexpected error occurred; it has been logged")


def register(app: Flask) -> None:
    app.register_error_handler(Problem, handle_problem)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(OperationalError, handle_unavailable)
    app.register_error_handler(InterfaceError, handle_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
