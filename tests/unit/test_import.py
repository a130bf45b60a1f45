"""Defects of the import found while testing it (issue 12), each as the rule it kept breaking:
a second run of the same file changed what the first recorded, the order of referral-linked
members was lost across inputs, and a taken redemption id answered another problem than 409.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api import imports
from api.problems import domain_problem
from domain.ledger import Ledger
from tests.histories import (
    in_memory,
    lines,
    member,
    post_one_by_one,
    purchase,
    redemption,
    statuses,
)

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def fresh() -> Ledger:
    return in_memory(NOW)[0]


def statuses_of(records: list[dict[str, Any]], *files: list[int]) -> dict[str, Any]:
    """The members' statuses after importing ``records`` as these files (lists of indexes)."""
    ledger = fresh()
    for chosen in files:
        imports.run(ledger, lines(records[i] for i in chosen), "file")
    return statuses(ledger, [r["member_id"] for r in records if r["kind"] == "member"])


SECOND_RUN_CASES = {
    # 50 points asked on 2024-01-10: o-1's 100 are pending until 2024-02-01, so it is refused.
    # The second run finds the member at 2024-06-01 (o-2) and redeems it there, late.
    "a redemption refused for want of points": [
        member("c-1", "2024-01-01T10:00:00+00:00"),
        purchase("o-1", "c-1", "100.00", "2024-01-02T10:00:00+00:00"),
        redemption("x-1", "c-1", 50, "2024-01-10T10:00:00+00:00"),
        purchase("o-2", "c-1", "10.00", "2024-06-01T10:00:00+00:00"),
    ],
}


def test_a_friend_enrolled_before_its_referrer_enrols_late_in_the_first_run() -> None:
    # The friend's enrolment (2024-01-01) names the code of a member enrolled on 2024-05-01:
    # it is applied once the referrer is, as a late record, and a second run finds it present.
    records = [
        member("ref", "2024-05-01T10:00:00+00:00"),
        member("friend", "2024-01-01T10:00:00+00:00", code_of="ref"),
    ]
    ledger = fresh()
    _, first = imports.run(ledger, lines(records), "friend")
    assert [r.status for r in first] == ["applied", "applied"]
    referred = ledger.referrals("ref")
    assert [r.referee_id for r in referred] == ["friend"]
    _, second = imports.run(ledger, lines(records), "friend")
    assert [r.status for r in second] == ["present", "present"]


@pytest.mark.parametrize("records", SECOND_RUN_CASES.values(), ids=SECOND_RUN_CASES)
def test_a_second_run_records_nothing_the_first_refused(records: list[dict[str, Any]]) -> None:
    ledger = fresh()
    body = lines(records)
    _, first = imports.run(ledger, body, "twice")
    assert "rejected" in {r.status for r in first}
    head = ledger.recorder.max_notification_id()
    _, second = imports.run(ledger, body, "twice")
    assert [r.status for r in second] == [
        "rejected" if r.status == "rejected" else "present" for r in first
    ]
    assert ledger.recorder.max_notification_id() == head


# "ann" refers "bob"; bob's first purchase (100.00, 2024-02-02) qualifies the referral: 500
# points for ann, available when its window closes on 2024-03-03. On 2024-04-01 ann redeems 400.
REFERRAL = [
    member("ann", "2024-01-01T10:00:00+00:00"),
    member("bob", "2024-02-01T10:00:00+00:00", code_of="ann"),
    redemption("x-1", "ann", 400, "2024-04-01T10:00:00+00:00"),
    purchase("b-1", "bob", "100.00", "2024-02-02T10:00:00+00:00"),
]


def test_a_referrers_reward_counts_for_what_it_redeems_after_the_window() -> None:
    found = statuses_of(REFERRAL, [0, 1, 2, 3])
    assert found["ann"]["points"]["redeemed"] == 400


def test_records_of_members_imported_before_keep_the_time_order_of_their_referrals() -> None:
    one_file = statuses_of(REFERRAL, [0, 1, 2, 3])
    members_then_orders = statuses_of(REFERRAL, [0, 1], [2, 3])
    assert members_then_orders == one_file


@pytest.mark.parametrize(
    "batch",
    [
        250,
        1,
    ],
)
def test_a_redemption_id_of_another_member_is_a_conflict_as_in_a_single_request(
    batch: int,
) -> None:
    records = [
        member("a", "2024-01-01T10:00:00+00:00"),
        member("b", "2024-01-01T11:00:00+00:00"),
        purchase("o-1", "a", "100.00", "2024-01-02T10:00:00+00:00"),
        redemption("x", "a", 10, "2024-03-04T10:00:00+00:00"),
        redemption("x", "b", 10, "2024-03-04T10:00:00+00:00"),
    ]
    live, clock = in_memory(NOW)
    refused = post_one_by_one(live, clock, records)
    assert list(refused) == [5] and refused[5].__class__.__name__ == "Conflict"
    _, results = imports.run(fresh(), lines(records), "ids", batch_size=batch)
    assert results[-1].problem == domain_problem(refused[5])
