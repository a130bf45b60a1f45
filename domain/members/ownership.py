"""Which member an order, a redemption or a referral code belongs to."""

from __future__ import annotations

import functools
from dataclasses import field
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actors import Cause
from domain.program import NAMESPACE


class Ownership(Aggregate):
    """Its id is derived from the natural key, so creating it twice conflicts in the event store:
    that is what makes an order id unique across concurrent requests and members.
    """

    TOPIC = "domain.members:Ownership"  # as stored since before this module existed

    class Created(Aggregate.Created):
        TOPIC = "domain.members:Ownership.Created"  # unused: ownerships are created by Recorded

    class Recorded(Aggregate.Created):
        TOPIC = "domain.members:Ownership.Recorded"
        kind: str
        key: str
        member_id: str
        # The cause and actor of the member's change that took the key (none when stored
        # before they were recorded).
        cause: str | None = field(default=None, kw_only=True)
        actor: dict[str, str] | None = field(default=None, kw_only=True)

    def __init__(
        self,
        kind: str,
        key: str,
        member_id: str,
        cause: str | None = None,
        actor: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.key = key
        self.member_id = member_id

    # An import batch computes its ids a few times over; a live order's id is new once, so a
    # larger cache only holds memory (100,000 entries were ~15 MiB a worker under the bench).
    @staticmethod
    @functools.lru_cache(maxsize=16_384)
    def key_id(kind: str, key: str) -> UUID:
        return uuid5(NAMESPACE, f"{kind}:{key}")

    @classmethod
    def record(cls, kind: str, key: str, member_id: str, at: datetime, cause: Cause) -> Ownership:
        return cls._create(
            cls.Recorded,
            id=cls.key_id(kind, key),
            kind=kind,
            key=key,
            member_id=member_id,
            cause=cause.id,
            actor=cause.actor.to_dict(),
            timestamp=at,
        )
