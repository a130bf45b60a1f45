"""The ledger as JSON Lines with a hash chain that anyone can verify offline.

Every event line carries ``prev_sha256``, the SHA-256 of the previous line's exact text (the
first line's is 64 zeros), and ``sha256``, the SHA-256 of its own canonical JSON without that
field. The last line is a summary with the count and the head hash. Changing, removing,
inserting or reordering any line breaks the chain at that line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS = "0" * 64
PAGE = 1000


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: dict[str, Any], previous_line: str | None) -> str:
    """The record as one line, chained to the line before it."""
    body = {**record, "prev_sha256": sha256(previous_line) if previous_line else GENESIS}
    return canonical({**body, "sha256": sha256(canonical(body))})


def export_lines(
    read_page: Callable[[int, int], list[dict[str, Any]]], exported_at: datetime
) -> Iterator[str]:
    """Every event, oldest first, then the summary; ``read_page(after, limit)`` reads the log."""
    previous: str | None = None
    count = 0
    after = 0
    while True:
        page = read_page(after, PAGE)
        for item in page:
            line = seal({"kind": "event", **_jsonable(item)}, previous)
            yield line
            previous = line
            count += 1
        if len(page) < PAGE:
            break
        after = page[-1]["position"]
    head = sha256(previous) if previous else GENESIS
    yield seal(
        {
            "kind": "summary",
            "count": count,
            "head_sha256": head,
            "exported_at": exported_at.isoformat(),
        },
        previous,
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    head_sha256: str
    broken_at: int | None = None  # 1-based line number
    reason: str = ""


def verify_lines(lines: Iterable[str]) -> Verification:
    """Recompute the chain; report the first line where it breaks."""
    previous: str | None = None
    events = 0
    summary: dict[str, Any] | None = None
    number = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if summary is not None:
            return _broken(number, events, previous, "a line follows the summary")
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return _broken(number, events, previous, "not a JSON line")
        if not isinstance(record, dict) or "sha256" not in record:
            return _broken(number, events, previous, "no sha256 field")
        expected_prev = sha256(previous) if previous else GENESIS
        if record.get("prev_sha256") != expected_prev:
            return _broken(number, events, previous, "prev_sha256 is not the previous line's hash")
        claimed = record.pop("sha256")
        if sha256(canonical(record)) != claimed:
            return _broken(number, events, previous, "the line's content does not match its sha256")
        if record.get("kind") == "summary":
            summary = record
        else:
            events += 1
        previous = line
    if summary is None:
        return _broken(number + 1, events, previous, "the summary line is missing")
    if summary.get("count") != events:
        return _broken(number, events, previous, f"the summary counts {summary.get('count')}")
    # prev_sha256 was checked above, so the head must be that same hash.
    if summary.get("head_sha256") != summary["prev_sha256"]:
        return _broken(number, events, previous, "the summary's head hash is not the last line's")
    return Verification(ok=True, events=events, head_sha256=summary["head_sha256"])


def _broken(number: int, events: int, previous: str | None, reason: str) -> Verification:
    return Verification(
        ok=False,
        events=events,
        head_sha256=sha256(previous) if previous else GENESIS,
        broken_at=number,
        reason=reason,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
