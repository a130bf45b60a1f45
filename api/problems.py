"""Every error leaves as application/problem+json (RFC 9457), and never with a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from domain.errors import (
    Conflict,
    DomainError,
    EnrolledAtOutOfRange,
    EvidenceRequired,
    GuaranteeAlreadyClaimed,
    GuaranteeWindowClosed,
    InsufficientPoints,
    InvalidAmount,
    InvalidInput,
    NoGuarantee,
    NotFound,
    OccurredAtOutOfRange,
    OverRefund,
    RedemptionAlreadyCancelled,
    RuleViolation,
    SelfReferral,
    StepNotDue,
    UnknownFollowup,
    UnknownFollowupStep,
    UnknownGuarantee,
    UnknownMember,
    UnknownOrder,
    UnknownPlan,
    UnknownRedemption,
    UnknownReferralCode,
    UnknownReward,
    WrongCurrency,
)

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_TYPES = "https://daifuku.dev/problems/"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProblemType:
    """A problem `type` storefronts branch on: a slug chosen on purpose, never a class name."""

    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return PROBLEM_TYPES + self.slug


# Every problem type the API serves: those it decides on itself (input, load, the database, and
# API keys, which are credentials rather than the loyalty domain), then one per domain error.
# Anything else answers about:blank with its status.
INVALID_INPUT = ProblemType("invalid-input", 422, "Invalid input")
SERVER_BUSY = ProblemType("server-busy", 503, "Server busy")
DATABASE_UNAVAILABLE = ProblemType("database-unavailable", 503, "Database unavailable")
UNKNOWN_KEY = ProblemType("unknown-key", 404, "Unknown key")
LAST_ADMIN_KEY = ProblemType("last-admin-key", 409, "Last admin key")
UNKNOWN_VERIFICATION = ProblemType("unknown-verification", 404, "Unknown verification")
UNKNOWN_WEBHOOK = ProblemType("unknown-webhook", 404, "Unknown webhook")
WEBHOOK_DISABLED = ProblemType("webhook-disabled", 409, "Webhook disabled")
API_PROBLEMS = (
    INVALID_INPUT,
    SERVER_BUSY,
    DATABASE_UNAVAILABLE,
    UNKNOWN_KEY,
    LAST_ADMIN_KEY,
    UNKNOWN_VERIFICATION,
    UNKNOWN_WEBHOOK,
    WEBHOOK_DISABLED,
)

# A class not listed answers as its nearest listed base; tests/unit/test_problem_types.py fails
# for any error in domain/ that is not listed.
DOMAIN_PROBLEMS: Mapping[type[DomainError], ProblemType] = {
    DomainError: ProblemType("domain-error", 400, "Domain error"),
    NotFound: ProblemType("not-found", 404, "Not found"),
    UnknownMember: ProblemType("unknown-member", 404, "Unknown member"),
    UnknownOrder: ProblemType("unknown-order", 404, "Unknown order"),
    UnknownRedemption: ProblemType("unknown-redemption", 404, "Unknown redemption"),
    Conflict: ProblemType("conflict", 409, "Conflict"),
    InvalidInput: INVALID_INPUT,
    RuleViolation: ProblemType("rule-violation", 422, "Rule violation"),
    InsufficientPoints: ProblemType("insufficient-points", 422, "Insufficient points"),
    OverRefund: ProblemType("over-refund", 422, "Over refund"),
    WrongCurrency: ProblemType("wrong-currency", 422, "Wrong currency"),
    InvalidAmount: ProblemType("invalid-amount", 422, "Invalid amount"),
    UnknownReward: ProblemType("unknown-reward", 422, "Unknown reward"),
    UnknownGuarantee: ProblemType("unknown-guarantee", 422, "Unknown guarantee"),
    OccurredAtOutOfRange: ProblemType("occurred-at-out-of-range", 422, "Occurred at out of range"),
    EnrolledAtOutOfRange: ProblemType("enrolled-at-out-of-range", 422, "Enrolled at out of range"),
    RedemptionAlreadyCancelled: ProblemType(
        "redemption-already-cancelled", 422, "Redemption already cancelled"
    ),
    NoGuarantee: ProblemType("no-guarantee", 422, "No guarantee"),
    GuaranteeWindowClosed: ProblemType("guarantee-window-closed", 422, "Guarantee window closed"),
    GuaranteeAlreadyClaimed: ProblemType(
        "guarantee-already-claimed", 422, "Guarantee already claimed"
    ),
    EvidenceRequired: ProblemType("evidence-required", 422, "Evidence required"),
    UnknownReferralCode: ProblemType("unknown-referral-code", 422, "Unknown referral code"),
    SelfReferral: ProblemType("self-referral", 422, "Self referral"),
    UnknownFollowup: ProblemType("unknown-followup", 404, "Unknown follow-up"),
    UnknownFollowupStep: ProblemType("unknown-followup-step", 404, "Unknown follow-up step"),
    StepNotDue: ProblemType("step-not-due", 422, "Step not due"),
    UnknownPlan: ProblemType("unknown-followup-plan", 404, "Unknown follow-up plan"),
}


def problem_type(error: type[DomainError]) -> ProblemType:
    """The listed type of this error class, or else of its nearest listed base class."""
    return next(DOMAIN_PROBLEMS[kind] for kind in error.__mro__ if kind in DOMAIN_PROBLEMS)


class Problem(Exception):
    """An error response the API decides on itself (not a domain refusal)."""

    def __init__(
        self,
        status: int | ProblemType,
        detail: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`status` alone answers about:blank; a ProblemType brings its own status and title."""
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = dict(errors) if errors is not None else None
        self.headers = dict(headers or {})


def invalid(field: str, message: str) -> Problem:
    return Problem(INVALID_INPUT, f"{field}: {message}", errors={field: [message]})


def problem_response(
    status: int | ProblemType,
    detail: str,
    *,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = problem_body(status, detail, errors=errors)
    response = current_app.response_class(
        current_app.json.dumps(body, separators=(",", ":")),
        status=body["status"],
        mimetype=PROBLEM_MIMETYPE,
    )
    response.headers.update(headers or {})
    return response


def problem_body(
    status: int | ProblemType, detail: str, *, errors: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """The problem document (also one line of an import's results)."""
    if isinstance(status, ProblemType):
        uri, title, code = status.uri, status.title, status.status
    else:
        # about:blank means "nothing more than the status code says" (RFC 9457, 4.2.1).
        uri, title, code = "about:blank", HTTPStatus(status).phrase, status
    body: dict[str, Any] = {"type": uri, "title": title, "status": code, "detail": detail}
    if errors is not None:
        body["errors"] = dict(errors)
    return body


def domain_problem(error: DomainError) -> dict[str, Any]:
    """The problem document a single request refused with ``error`` would answer."""
    fields: dict[str, list[str]] | None = None
    if isinstance(error, InvalidInput):
        fields = error.errors
    elif error.field:
        fields = {error.field: [error.message]}
    return problem_body(problem_type(type(error)), error.message, errors=fields)


def invalid_problem(errors: Mapping[str, list[str]]) -> dict[str, Any]:
    """The problem document of a body that breaks its schema (422)."""
    return problem_body(INVALID_INPUT, _summary(errors), errors=errors)


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


def handle_problem(error: Problem) -> Response:
    return problem_response(error.status, error.detail, errors=error.errors, headers=error.headers)


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
        # webargs answers 422 for fields that break the schema, 400 for a body that is no JSON.
        return problem_response(
            replace(INVALID_INPUT, status=status),
            _summary(errors),
            errors=errors,
            headers=headers | dict(data.get("headers") or {}),
        )
    detail = error.description or HTTPStatus(status).phrase
    return problem_response(status, detail, headers=headers)


def handle_domain_error(error: DomainError) -> Response:
    body = domain_problem(error)
    return problem_response(problem_type(type(error)), body["detail"], errors=body.get("errors"))


def handle_unavailable(error: Exception) -> Response:
    log.error("database unavailable: %s", error)
    return problem_response(
        DATABASE_UNAVAILABLE,
        "the ledger's database does not answer; try again shortly",
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
