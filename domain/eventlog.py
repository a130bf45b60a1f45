"""Reading the ledger's notification log: pages of events as auditors see them, and member
events of given types in recorded order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain.members import Member

MEMBER_TOPIC = f"{get_topic(Member)}."
HIDDEN = {"originator_id", "originator_version", "timestamp", "originator_topic"}
# The plain email and name of a member enrolled by an older version: never shown (the event's
# sealed fields, or nothing, are).
PLAIN = {"legacy_email", "legacy_name"}
SHOWN_APART = HIDDEN | PLAIN | {"actor"}  # the actor is shown beside the data, not in it
# The largest position (and aggregate version) either store can hold: a signed 64-bit integer,
# SQLite's INTEGER and PostgreSQL's BIGINT. A number past it is never sent to a store.
MAX_POSITION = 2**63 - 1


def describe_event(event: Any) -> dict[str, Any]:
    """An event as the API and auditors see it: type, times and its own data."""
    data = {k: to_json(v) for k, v in event.__dict__.items() if k not in SHOWN_APART}
    occurred = getattr(event, "occurred_at", None) or getattr(event, "at", None)
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "recorded_at": event.timestamp,
        "occurred_at": occurred,
        "actor": getattr(event, "actor", None),
        "data": data,
    }


def aggregate_of(event: Any) -> str:
    """The aggregate an event belongs to, as its stored topic names it (``Member``, ...)."""
    return get_topic(type(event)).partition(":")[2].split(".")[0]


def to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def page(app: Application[UUID], after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """The whole ledger in the order it was recorded, each event with its position."""
    described_page: list[dict[str, Any]] = []
    if after >= MAX_POSITION:
        return described_page  # nothing can come after the last position a store can hold
    for notification in app.recorder.select_notifications(start=after + 1, limit=limit):
        event = app.mapper.to_domain_event(notification)
        described = describe_event(event)
        described_page.append(
            {
                "position": notification.id,
                "type": described["type"],
                "aggregate": aggregate_of(event),
                "member_id": getattr(event, "member_id", None),
                "recorded_at": described["recorded_at"],
                "occurred_at": described["occurred_at"],
                "actor": described["actor"],
                "data": described["data"],
            }
        )
    return described_page


def member_events_of_types(app: Application[UUID], *names: str) -> Iterator[Any]:
    """Member events of these types, in recorded order, read a page at a time."""
    topics = [f"{MEMBER_TOPIC}{name}" for name in names]
    start = 1
    while True:
        notifications = app.recorder.select_notifications(start=start, limit=1000, topics=topics)
        if not notifications:
            return
        for notification in notifications:
            yield app.mapper.to_domain_event(notification)
        start = notifications[-1].id + 1


def legacy_enrolments(app: Application[UUID]) -> Iterator[str]:
    """The members an older version enrolled with their email and name in plain text."""
    for event in member_events_of_types(app, "Enrolled"):
        if getattr(event, "legacy_email", None) is not None:
            yield str(event.member_id)


def changed_members(app: Application[UUID], after: int) -> Iterator[tuple[dict[UUID, int], int]]:
    """The members changed after position ``after`` (each with its latest version), a page at
    a time, with each page's end."""
    start = after + 1
    while True:
        notifications = app.recorder.select_notifications(start=start, limit=1000)
        if not notifications:
            return
        changed: dict[UUID, int] = {}
        for n in notifications:
            if n.topic.startswith(MEMBER_TOPIC):
                changed[UUID(str(n.originator_id))] = n.originator_version
        yield changed, notifications[-1].id
        start = notifications[-1].id + 1
