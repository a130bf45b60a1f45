"""Problem types are public: each error's slug is listed once, on purpose, and survives a rename."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable

import pytest
from flask import Flask

import domain
from api.problems import API_PROBLEMS, DOMAIN_PROBLEMS, register
from domain import errors
from domain.errors import DomainError, InsufficientPoints, RuleViolation

# What each error answered before the table existed (then derived from its class name). Clients
# branch on these: a change here breaks them.
CONTRACT: list[tuple[DomainError, int, str, str]] = [
    (errors.DomainError("refused"), 400, "domain-error", "Domain error"),
    (errors.NotFound("gone"), 404, "not-found", "Not found"),
    (errors.UnknownMember("ann"), 404, "unknown-member", "Unknown member"),
    (errors.UnknownOrder("A-1"), 404, "unknown-order", "Unknown order"),
    (errors.UnknownRedemption("R-1"), 404, "unknown-redemption", "Unknown redemption"),
    (errors.Conflict("other content", "email"), 409, "conflict", "Conflict"),
    (errors.InvalidInput({"tiers": ["overlap"]}), 422, "invalid-input", "Invalid input"),
    (errors.RuleViolation("no"), 422, "rule-violation", "Rule violation"),
    (errors.InsufficientPoints("short"), 422, "insufficient-points", "Insufficient points"),
    (errors.OverRefund("too much"), 422, "over-refund", "Over refund"),
    (errors.WrongCurrency("EUR"), 422, "wrong-currency", "Wrong currency"),
    (errors.InvalidAmount("-1"), 422, "invalid-amount", "Invalid amount"),
    (errors.UnknownReward("yacht"), 422, "unknown-reward", "Unknown reward"),
    (errors.UnknownGuarantee("forever"), 422, "unknown-guarantee", "Unknown guarantee"),
    (
        errors.OccurredAtOutOfRange("1999"),
        422,
        "occurred-at-out-of-range",
        "Occurred at out of range",
    ),
    (
        errors.EnrolledAtOutOfRange("2099"),
        422,
        "enrolled-at-out-of-range",
        "Enrolled at out of range",
    ),
    (
        errors.RedemptionAlreadyCancelled("R-1"),
        422,
        "redemption-already-cancelled",
        "Redemption already cancelled",
    ),
    (errors.NoGuarantee("none"), 422, "no-guarantee", "No guarantee"),
    (
        errors.GuaranteeWindowClosed("late"),
        422,
        "guarantee-window-closed",
        "Guarantee window closed",
    ),
    (
        errors.GuaranteeAlreadyClaimed("twice"),
        422,
        "guarantee-already-claimed",
        "Guarantee already claimed",
    ),
    (errors.EvidenceRequired("photo"), 422, "evidence-required", "Evidence required"),
    (
        errors.UnknownReferralCode("ZZZZ"),
        422,
        "unknown-referral-code",
        "Unknown referral code",
    ),
    (errors.SelfReferral(), 422, "self-referral", "Self referral"),
    (errors.UnknownFollowup("thank-you~1~m1"), 404, "unknown-followup", "Unknown follow-up"),
    (
        errors.UnknownFollowupStep("thank-you~1~m1", 9),
        404,
        "unknown-followup-step",
        "Unknown follow-up step",
    ),
    (errors.StepNotDue("later"), 422, "step-not-due", "Step not due"),
    (
        errors.UnknownPlan("thank-you"),
        404,
        "unknown-followup-plan",
        "Unknown follow-up plan",
    ),
]
API_CONTRACT = {
    "invalid-input": (422, "Invalid input"),
    "server-busy": (503, "Server busy"),
    "database-unavailable": (503, "Database unavailable"),
    "unknown-key": (404, "Unknown key"),
    "last-admin-key": (409, "Last admin key"),
    "unknown-verification": (404, "Unknown verification"),
    "unknown-webhook": (404, "Unknown webhook"),
    "webhook-disabled": (409, "Webhook disabled"),
}


def serve(error: Exception) -> dict[str, object]:
    app = Flask("problems")
    register(app)

    @app.post("/refuse")
    def refuse() -> None:
        raise error

    response = app.test_client().post("/refuse")
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == response.status_code
    return dict(body)


def domain_errors() -> set[type[DomainError]]:
    """Every DomainError subclass defined anywhere in domain/."""
    for module in pkgutil.walk_packages(domain.__path__, "domain."):
        importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    todo: list[type[DomainError]] = [DomainError]
    while todo:
        kind = todo.pop()
        if kind.__module__.startswith("domain."):
            found.add(kind)
        todo.extend(kind.__subclasses__())
    return found


def unlisted(kinds: Iterable[type[DomainError]]) -> list[type[DomainError]]:
    return [kind for kind in kinds if kind not in DOMAIN_PROBLEMS]


def test_the_table_is_the_contract() -> None:
    table = {kind: (t.status, t.slug, t.title) for kind, t in DOMAIN_PROBLEMS.items()}
    assert table == {type(error): (status, slug, title) for error, status, slug, title in CONTRACT}
    assert {t.slug: (t.status, t.title) for t in API_PROBLEMS} == API_CONTRACT


@pytest.mark.parametrize(("error", "status", "slug", "title"), CONTRACT)
def test_each_error_is_served_with_its_pinned_type(
    error: DomainError, status: int, slug: str, title: str
) -> None:
    body = serve(error)
    assert body["type"] == f"https://daifuku.dev/problems/{slug}"
    assert (body["status"], body["title"], body["detail"]) == (status, title, error.message)


def test_every_domain_error_is_listed_and_lives_in_domain_errors() -> None:
    found = domain_errors()
    assert unlisted(found) == []
    assert set(found) == {
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, DomainError)
    }
    assert all(kind.__module__ == "domain.errors" for kind in DOMAIN_PROBLEMS)


def test_an_error_without_an_entry_is_caught_by_the_listing_check() -> None:
    class Unlisted(RuleViolation):
        pass

    assert unlisted([InsufficientPoints, Unlisted]) == [Unlisted]


def test_the_domain_slugs_are_distinct() -> None:
    slugs = [t.slug for t in DOMAIN_PROBLEMS.values()]
    assert len(slugs) == len(set(slugs))


def test_renaming_an_error_class_changes_nothing_served() -> None:
    InsufficientPoints.__name__ = InsufficientPoints.__qualname__ = "NotEnoughPoints"
    try:
        body = serve(InsufficientPoints("short"))
    finally:
        InsufficientPoints.__name__ = InsufficientPoints.__qualname__ = "InsufficientPoints"
    assert body["type"] == "https://daifuku.dev/problems/insufficient-points"
    assert body["title"] == "Insufficient points"


def test_a_subclass_answers_as_its_listed_base() -> None:
    class PointsOnHold(InsufficientPoints):
        pass

    body = serve(PointsOnHold("on hold"))
    assert body["type"] == "https://daifuku.dev/problems/insufficient-points"
    assert body["status"] == 422
