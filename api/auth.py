"""Who may call what: bearer API keys and member tokens, checked before any view runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from flask_smorest import Blueprint

from adapters.keys import is_member_token, read_member_token
from api.context import Caller, backend
from api.problems import Problem

F = TypeVar("F", bound=Callable[..., Any])
SECURITY_SCHEME = "bearerAuth"
MAX_CREDENTIAL_LENGTH = 512
DOC_BLUEPRINTS = {"api-docs", "api-docs-assets"}


@dataclass(frozen=True)
class Access:
    """The roles a view admits; admin is always admitted. A member token passes only for the
    member named by the path argument ``member_arg`` (or anywhere when ``any_member``)."""

    roles: frozenset[str]
    member_arg: str | None = None
    public: bool = False

    def admits(self, caller: Caller, view_args: dict[str, Any]) -> bool:
        if caller.role == "admin":
            return True
        if caller.role != "member":
            return caller.role in self.roles
        if "member" not in self.roles:
            return False
        return self.member_arg is None or view_args.get(self.member_arg) == caller.member_id


ADMIN_ONLY = Access(frozenset({"admin"}))


def allow(*roles: str, member: str | None = None) -> Callable[[F], F]:
    """``@allow("storefront", member="member_id")``: storefronts, admins, and a member token
    bound to the member named by the path argument ``member_id``."""
    admitted = frozenset(roles) | ({"member"} if member else set())
    who = [role for role in roles if role != "member"]
    if member is not None:
        who.append(f"member token for {{{member}}}")
    elif "member" in roles:
        who.append("any member token")
    who.append("admin")

    def decorate(view: F) -> F:
        documented: Any = Blueprint.doc(
            security=[{SECURITY_SCHEME: []}],
            responses={"401": "UNAUTHORIZED", "403": "FORBIDDEN"},
            **{"x-roles": who},
        )(view)
        documented.access = Access(admitted, member_arg=member)
        return documented  # type: ignore[no-any-return]

    return decorate


def public(view: F) -> F:
    documented: Any = Blueprint.doc(security=[])(view)
    documented.access = Access(frozenset(), public=True)
    return documented  # type: ignore[no-any-return]


def check_access() -> None:
    """before_request: 401 without valid credentials, 403 for a role the view does not admit."""
    if request.endpoint is None:
        return  # no such route: the 404 or 405 follows
    view = current_app.view_functions.get(request.endpoint)
    access: Access | None = getattr(view, "access", None)
    if access is None:
        if request.blueprint in DOC_BLUEPRINTS or request.endpoint == "static":
            return
        access = ADMIN_ONLY  # a view nobody declared access for is admin-only
    if access.public:
        return
    caller = authenticate()
    g.caller = caller
    if not access.admits(caller, request.view_args or {}):
        if caller.role == "member":
            detail = "a member token may only be used for its own member's resources"
        else:
            detail = f"the {caller.role} role may not do this"
        raise Problem(403, detail)


def authenticate() -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise unauthorized("send Authorization: Bearer <API key or member token>")
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise unauthorized("the credential is not valid", error="invalid_token")
    found = backend()
    if is_member_token(credential):
        token = read_member_token(found.token_secret, credential, found.clock.now())
        if token is None:
            raise unauthorized("the member token is invalid or has expired", error="invalid_token")
        if found.keys.refuses(token):
            raise unauthorized("the member token has been revoked", error="invalid_token")
        member_id = token.member_id
        return Caller(role="member", name=f"member {member_id}", member_id=member_id)
    key = found.keys.find(credential)
    if key is None:
        raise unauthorized("the API key is not valid", error="invalid_token")
    state = key.state(found.keys.now())
    if state != "active":
        raise unauthorized(f"the API key has been {state}", error="invalid_token")
    found.keys.record_use(key)
    return Caller(role=key.role, name=key.name, key_id=key.key_id)


def unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = f'Bearer realm="daifuku", error="{error}"' if error else 'Bearer realm="daifuku"'
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})
