"""What every member event after enrolment carries, and how it is applied."""

from __future__ import annotations

from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

if TYPE_CHECKING:
    from domain.members.member import Member


class MemberEvent(Aggregate.Event):
    """Base of every later member event: whose, business time, cause and program version.

    Stored events name their class by ``TOPIC`` (``domain.members:Member.<name>``), as they
    did when the events were nested in the aggregate, whatever module holds the code now.
    """

    TOPIC = "domain.members:Member.Changed"

    member_id: str
    at: datetime
    cause: str
    program_version: int
    # Who did it (``domain.actors.Actor.to_dict``); events stored before actors were recorded
    # have none, and read ``None`` from this default.
    actor: dict[str, str] | None = field(default=None, kw_only=True)

    def apply(self, aggregate: Any) -> None:
        aggregate.business_time = max(aggregate.business_time, self.at)
        self.change(aggregate)
        aggregate.prune_due()

    def change(self, member: Member) -> None:
        """The state change of this event, run on every replay."""


def lot_refs(taken: list[list[int]]) -> dict[str, int]:
    """Version 1 events named lots by the order they were opened in: ``#<n>``."""
    return {f"#{index}": points for index, points in taken}
