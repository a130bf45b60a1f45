"""The public event types are a contract: the one table in domain/webhooks.py names exactly
the types PROGRAM.md promises, each made from a member event that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.webhook_dispatch import RETRY_SCHEDULE, next_attempt
from adapters.webhook_http import Attempt
from domain.members import Member
from domain.webhooks import TYPE_NAMES, TYPES, check_types

# As for API.md (tests/e2e/test_ops.py): the shared folder beside the checkout, else the copy.
SHARED_PROGRAM = Path(__file__).resolve().parents[3] / "shared" / "PROGRAM.md"
COPIED_PROGRAM = Path(__file__).resolve().parents[1] / "contract" / "PROGRAM.md"
PROGRAM = SHARED_PROGRAM if SHARED_PROGRAM.is_file() else COPIED_PROGRAM


def promised_types() -> list[str]:
    text = PROGRAM.read_text()
    section = text[text.index("## Outbound events") :]
    section = section[: section.index("\n## ", 1)]
    listed = section[section.index("Public event types") : section.index("- Delivery")]
    return re.findall(r"`([a-z_]+\.[a-z_]+)`", listed)


def test_the_copy_of_program_md_is_the_shared_one() -> None:
    if not SHARED_PROGRAM.is_file():
        pytest.skip(f"no {SHARED_PROGRAM} beside this checkout: the copy is the contract here")
    assert COPIED_PROGRAM.read_text() == SHARED_PROGRAM.read_text(), (
        f"copy {SHARED_PROGRAM} to {COPIED_PROGRAM}"
    )


def test_the_table_names_exactly_the_promised_types() -> None:
    assert sorted(TYPE_NAMES) == sorted(promised_types())


@pytest.mark.parametrize("public", TYPES, ids=lambda t: t.name)
def test_each_type_is_made_from_a_member_event(public: object) -> None:
    event = getattr(Member, public.event, None)  # type: ignore[attr-defined]
    assert event is not None, f"no member event {public.event}"  # type: ignore[attr-defined]
    fields = getattr(event, "__annotations__", {})
    for cls in event.__mro__:
        fields = {**getattr(cls, "__annotations__", {}), **fields}
    missing = [f for f in public.fields if f not in fields]  # type: ignore[attr-defined]
    assert not missing, f"{public.event} has no {missing}"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("types", "problem"),
    [
        ([], "at least one"),
        (["*", "member.enrolled"], "alone"),
        (["member.signed_up"], "unknown event type member.signed_up"),
        (["tier.upgraded", "tier.upgraded"], "twice"),
    ],
)
def test_bad_type_lists_are_refused_with_a_reason(types: list[str], problem: str) -> None:
    found = check_types(types)
    assert found is not None and problem in found


def test_good_type_lists_pass() -> None:
    assert check_types(["*"]) is None
    assert check_types(["tier.upgraded", "followup.step_due"]) is None


def test_retries_follow_the_schedule_with_jitter_then_stop() -> None:
    failed = Attempt(500, 1.0)
    for tries, wait in enumerate(RETRY_SCHEDULE, start=1):
        at = next_attempt(tries, failed, 1000.0)
        assert at is not None and 0.9 * wait <= at - 1000.0 <= 1.1 * wait
    assert next_attempt(len(RETRY_SCHEDULE) + 1, failed, 1000.0) is None


def test_retry_after_is_honoured_on_429_and_503_only() -> None:
    assert next_attempt(1, Attempt(429, 1.0, retry_after=120.0), 0.0) == 120.0
    assert next_attempt(1, Attempt(503, 1.0, retry_after=10**9), 0.0) == 86_400.0
    at = next_attempt(1, Attempt(500, 1.0, retry_after=120.0), 0.0)
    assert at is not None and at < 10
