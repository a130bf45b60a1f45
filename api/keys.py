"""API keys: listed (never the secret), created (the secret shown once) and revoked, by admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.keys import ApiKey, LastAdminKey, UnknownKey
from api import cursors
from api.auth import allow
from api.blueprint import ApiBlueprint
from api.context import backend
from api.problems import LAST_ADMIN_KEY, UNKNOWN_KEY, Problem, invalid
from api.schemas import KeyCreated, KeyPage, KeyRequest, KeysQuery, KeyView

blp = ApiBlueprint(
    "keys",
    __name__,
    url_prefix="/v1/keys",
    description="Storefront, auditor and admin keys; a revoked or expired key is refused by "
    "every server process within a second.",
)
CURSOR_SEPARATOR = "|"


@blp.route("")
@allow()
@blp.arguments(KeysQuery(), location="query")
@blp.response(200, KeyPage)
def list_keys(query: dict[str, Any]) -> dict[str, Any]:
    """Every key, oldest first, with its state and when it was last used; never a secret"""
    limit: int = query["limit"]
    found = backend().keys.page(_read_cursor(query.get("cursor")), limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return {"items": [_view(key) for key in page], "next": _cursor(page[-1]) if more else None}


@blp.route("", methods=["POST"])
@allow()
@blp.arguments(KeyRequest())
@blp.response(201, KeyCreated, description="Created; the secret is shown only in this answer")
def create_key(body: dict[str, Any]) -> dict[str, Any]:
    """Create a key for a storefront, an auditor or an admin"""
    keys = backend().keys
    expires_at = body.get("expires_at")
    if expires_at is not None and expires_at <= keys.now():
        raise invalid("expires_at", "must lie in the future")
    key, secret = keys.issue(body["role"], body["name"], expires_at)
    return {**_view(key), "secret": secret}


@blp.route("/<key_id:key_id>", methods=["DELETE"])
@allow()
@blp.response(200, KeyView, description="Revoked (also when it already was)")
@blp.doc(responses={"404": "NOT_FOUND", "409": "CONFLICT", "422": "UNPROCESSABLE_ENTITY"})
def revoke_key(key_id: str) -> dict[str, Any]:
    """Revoke a key: every server process refuses it within a second; the last admin key that
    works is kept (409), so that the shop cannot lock itself out"""
    try:
        return _view(backend().keys.revoke(key_id))
    except UnknownKey as error:
        raise Problem(UNKNOWN_KEY, str(error)) from None
    except LastAdminKey as error:
        raise Problem(LAST_ADMIN_KEY, str(error)) from None


def _view(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "role": key.role,
        "state": key.state(backend().keys.now()),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _cursor(key: ApiKey) -> str:
    return cursors.encode(f"{key.created_at.isoformat()}{CURSOR_SEPARATOR}{key.key_id}")


def _read_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    def parse(text: str) -> tuple[datetime, str] | None:
        created, separator, key_id = text.partition(CURSOR_SEPARATOR)
        after = datetime.fromisoformat(created)
        return (after, key_id) if separator and key_id and after.tzinfo is not None else None

    return cursors.decode(cursor, parse) if cursor else None
