"""One-time steps of the upgrade to sealed personal data, on the stores' own tables.

Members enrolled before personal data was sealed have their email and name in plain text in
their first stored event (``Enrolled`` version 1), and in snapshots of the older shapes. Once
``PersonalDataSealed`` holds them sealed, the plain copies are removed:

- from the ``Enrolled`` row, the two plain fields only (``redact_plain_fields``). This is the
  one change ever made to a stored event in place, and it changes nothing anyone can observe:
  the upcaster reads a missing field as none, the event log and the export never showed those
  fields (``domain/eventlog.py``), so every export line, its hash chain, and every replay are
  the same before and after;
- every snapshot of an older shape (``delete_old_snapshots``): snapshots are caches of a fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier

from domain.ledger import Ledger

PLAIN_FIELDS = ("email", "name")  # as Enrolled version 1 stored them


def redact_plain_fields(ledger: Ledger, member: UUID, fields: Iterable[str] = PLAIN_FIELDS) -> bool:
    """Remove ``fields`` from the member's first stored event; False if none was there."""
    recorder = ledger.recorder
    found = recorder.select_events(member, lte=1)
    if not found:
        return False
    mapper = ledger.mapper
    raw = found[0].state
    if mapper.compressor is not None:
        raw = mapper.compressor.decompress(raw)
    state: dict[str, Any] = mapper.transcoder.decode(raw)
    if not any(name in state for name in fields):
        return False
    for name in fields:
        state.pop(name, None)
    encoded = mapper.transcoder.encode(state)
    if mapper.compressor is not None:
        encoded = mapper.compressor.compress(encoded)
    _update_state(recorder, member, 1, encoded)
    return True


def delete_old_snapshots(ledger: Ledger, current_topic: str) -> None:
    """Delete every snapshot whose topic is not ``current_topic``."""
    if ledger.snapshots is None:
        return
    recorder = ledger.snapshots.recorder
    if isinstance(recorder, SQLiteAggregateRecorder):
        with recorder.datastore.transaction(commit=True) as c:
            c.execute(
                f"DELETE FROM {recorder.events_table_name} WHERE topic <> ?", (current_topic,)
            )
    elif isinstance(recorder, PostgresAggregateRecorder):
        with recorder.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("DELETE FROM {0}.{1} WHERE topic <> %s").format(
                    Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
                ),
                (current_topic,),
            )


def _update_state(
    recorder: AggregateRecorder, originator: UUID, version: int, state: bytes
) -> None:
    if isinstance(recorder, SQLiteAggregateRecorder):
        with recorder.datastore.transaction(commit=True) as c:
            c.execute(
                f"UPDATE {recorder.events_table_name} SET state = ? "
                "WHERE originator_id = ? AND originator_version = ?",
                (state, originator.hex, version),
            )
    elif isinstance(recorder, PostgresAggregateRecorder):
        with recorder.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "UPDATE {0}.{1} SET state = %s WHERE originator_id = %s "
                    "AND originator_version = %s"
                ).format(
                    Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
                ),
                (state, originator, version),
            )
    else:  # the in-memory store keeps no copy but the one the ledger reads
        raise TypeError(f"no in-place redaction for {type(recorder).__name__}")
