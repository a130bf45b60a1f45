"""What a view reaches for: the ledger, the key store, the clock, the caller, the cause."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app, g

from adapters.followup_tables import FollowupTables
from adapters.import_rejections import MemoryRejections, Rejections
from adapters.keys import KeyStore
from adapters.verification_jobs import VerificationJobs
from adapters.views import MemberStatusView
from adapters.webhooks import Webhooks
from api.metrics import Metrics

if TYPE_CHECKING:
    from domain.clock import Clock
    from domain.ledger import Ledger
from domain.actors import Actor, Cause
from domain.writes import Written

EXTENSION = "daifuku"


@dataclass(frozen=True)
class Backend:
    ledger: Ledger
    keys: KeyStore
    token_secret: bytes
    clock: Clock
    token_ttl_seconds: int
    metrics: Metrics
    verifications: VerificationJobs  # replays of the whole history, run as jobs
    views: MemberStatusView | None = None  # None: every read is answered by the ledger
    read_wait_seconds: float = 2.0
    # What imports refused, so that the same import posted again refuses it again.
    import_rejections: Rejections = field(default_factory=MemoryRejections)
    webhooks: Webhooks | None = None  # subscriptions and their outbox
    followups: FollowupTables | None = None  # the follow-up process's read models


T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a key's role and name, or a member token's member."""

    role: str
    name: str
    member_id: str | None = None
    key_id: str | None = None  # the API key's public id (None for a member token)


def backend() -> Backend:
    found: Backend = current_app.extensions[EXTENSION]
    return found


def ledger() -> Ledger:
    return backend().ledger


def answer(
    written: Written[T], represent: Callable[[T], dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """A write's response: 201 when it recorded something, 200 for a repeat, with where the
    write was recorded (for ``?after=``)."""
    body = {**represent(written.value), "position": written.position}
    return body, 201 if written.created else 200


def cause() -> Cause:
    """The request's id and its caller, recorded with every event it causes."""
    request_id: str = g.request_id
    return Cause(request_id, actor_of(caller()))


def actor_of(who: Caller) -> Actor:
    if who.role == "member":
        assert who.member_id is not None
        return Actor.member(who.member_id)
    assert who.key_id is not None, "an API key caller has the key's id"
    return Actor.key(who.key_id, who.name, who.role)


def caller() -> Caller:
    who: Caller = g.caller
    return who
