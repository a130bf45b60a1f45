"""The opaque cursors of paged lists: what the list needs to go on, in URL-safe base64."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from api.problems import invalid

T = TypeVar("T")


def encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str, parse: Callable[[str], T | None]) -> T:
    """What ``parse`` reads in ``cursor``; a 422 on ``cursor`` for anything this API did not
    hand out (``parse`` answers None or raises ValueError)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found = parse(text)
        if found is not None:
            return found
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise invalid("cursor", "is not a cursor this API handed out")
