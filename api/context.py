"""What a view reaches for: the ledger, the key store, the clock, the caller, the cause."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app, g

from adapters.keys import KeyStore
from adapters.views import MemberStatusView
from api.metrics import Metrics

if TYPE_CHECKING:
    from domain.clock import Clock
    from domain.ledger import Ledger

EXTENSION = "daifuku"


@dataclass(frozen=True)
class Backend:
    ledger: Ledger
    keys: KeyStore
    token_secret: bytes
    clock: Clock
    token_ttl_seconds: int
    metrics: Metrics
    views: MemberStatusView | None = None  # None: every read is answered by the ledger
    read_wait_seconds: float = 2.0


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a key's role and name, or a member token's member."""

    role: str
    name: str
    member_id: str | None = None


def backend() -> Backend:
    found: Backend = current_app.extensions[EXTENSION]
    return found


def ledger() -> Ledger:
    return backend().ledger


def with_position(result: dict[str, Any]) -> dict[str, Any]:
    """A write's response, with where the write was recorded (for ``?after=``)."""
    return {**result, "position": ledger().last_position()}


def cause() -> str:
    """The request's id, recorded with every event it causes."""
    request_id: str = g.request_id
    return request_id


def caller() -> Caller:
    who: Caller = g.caller
    return who
