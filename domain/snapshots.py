"""Member snapshots: taken from the state in hand, spaced out as a history grows, and ignored
when an older shape of the model took them.

A snapshot is a cache of a fold, not a fact: one the current model cannot read is skipped and
the member is folded from its events (and snapshotted again at its next checkpoint).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import EventStore
from eventsourcing.utils import get_topic

from domain.members import Member


class MemberSnapshot(Snapshot):
    """A member's state in the shape of member model version 5 (typed state, named lots,
    personal data sealed, lots and guarantees queued for their notices, follow-ups and
    dormancy). Version 3 and 4 snapshots lack the notice queues or the follow-ups: they are
    skipped, and members folded from their events. Version 2 snapshots held the email and name
    in plain text: never read, and the one-time sealing deletes them."""

    TOPIC = "daifuku:MemberSnapshot.v5"


SNAPSHOT_TOPIC = get_topic(MemberSnapshot)


class CurrentSnapshots(EventStore[UUID]):
    """The snapshot store, reading only snapshots of the model's current shape."""

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[Any]:
        for stored in self.recorder.select_events(
            originator_id=originator_id, gt=gt, lte=lte, desc=desc, limit=limit
        ):
            if stored.topic == SNAPSHOT_TOPIC:
                yield self.mapper.to_domain_event(stored)


def last_checkpoint(version: int, interval: int) -> int:
    """The latest snapshot version at or below ``version``: every ``interval`` events at first,
    then twice as far apart each time the history doubles past eight intervals."""
    step = interval
    while version >= step * 8:
        step *= 2
    return version - version % step


def due_snapshots(
    aggregates: Sequence[Aggregate], saved: Sequence[Any], interval: int
) -> list[MemberSnapshot]:
    """Snapshots of the members whose save just passed a checkpoint, from the state in hand
    (no replay), so that snapshots cost the same per event for any history."""
    taken = []
    counts = Counter(event.originator_id for event in saved)
    for aggregate in aggregates:
        if not isinstance(aggregate, Member):
            continue
        held = aggregate.personal
        if held.legacy_email is not None or held.legacy_name is not None:
            continue  # plain personal data of an older version: sealed first, never snapshotted
        if last_checkpoint(aggregate.version, interval) > aggregate.version - counts[aggregate.id]:
            taken.append(MemberSnapshot.take(aggregate))
    return taken
