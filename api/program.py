"""The program in force, and publishing a new version of it."""

from __future__ import annotations

from typing import Any

from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import cause, ledger
from api.schemas import ProgramRulesSchema, ProgramView
from domain.program import ProgramRules, ProgramVersion

blp = ApiBlueprint(
    "program",
    __name__,
    url_prefix="/v1/program",
    description="Every publication is a new version; replays use the version in force at the time.",
)


@blp.route("")
@allow("storefront", "auditor", "member")
@blp.response(200, ProgramView)
def current() -> dict[str, Any]:
    """The program in force: currency, earning, tiers, guarantees, rewards and referral terms"""
    return _view(ledger().program())


@blp.route("", methods=["PUT"])
@allow()
@blp.arguments(ProgramRulesSchema(), description="The whole rules object, as GET returns it")
@blp.response(200, ProgramView, description="Published as a new version")
def publish(body: dict[str, Any]) -> dict[str, Any]:
    """Publish a new program version (the rules object replaces the current one whole)"""
    return _view(ledger().publish_program(ProgramRules.from_dict(body), cause=cause()))


def _view(version: ProgramVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "published_at": version.published_at,
        "rules": version.rules.to_dict(),
    }
