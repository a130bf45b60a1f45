"""An import leaves every member as if each record had arrived on its own day (a property).

For random histories (a few members, some referred by an earlier one; purchases of random
amounts and categories over about three years; refunds within the order's amount; small
redemptions), importing the records gives the same member statuses, referrals, recorded changes
and refusals as posting the same records one by one through the Ledger's single commands on a
clock moved to each record's time (on that clock each purchase is live: its occurred_at is now),
in batches of any size; and the scheduler then records the same changes on both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import imports, representations
from api.problems import domain_problem
from domain.ledger import Ledger
from domain.members import referral_code_for
from tests.histories import in_memory, lines, member_ids, post_one_by_one, statuses

BASE = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
ENROLMENT_DAYS = 200
PURCHASE_DAYS = 900
REFUND_DAYS = 200
# The common instant after every record, at which the two ledgers are compared.
END = BASE + timedelta(days=ENROLMENT_DAYS + PURCHASE_DAYS + REFUND_DAYS + 1)
CATEGORIES = ("tea", "cups", "pots")
UNCOMPARED = {"cause", "sealed_email", "sealed_name", "email_digest"}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def money(cents: int) -> str:
    return str(Decimal(cents).scaleb(-2))


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    starts = sorted(
        draw(st.lists(st.integers(0, ENROLMENT_DAYS * 24), min_size=count, max_size=count))
    )
    members: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for n, start in enumerate(starts):
        member_id = f"m{n}"
        enrolled = BASE + timedelta(hours=start, minutes=n)  # distinct enrolments
        member = {
            "kind": "member",
            "member_id": member_id,
            "email": f"{member_id}@example.com",
            "enrolled_at": iso(enrolled),
        }
        if n and draw(st.booleans()):
            member["referral_code"] = referral_code_for(f"m{draw(st.integers(0, n - 1))}")
        members.append(member)
        for p in range(draw(st.integers(0, 6))):
            order_id = f"o{n}-{p}"
            bought = enrolled + timedelta(hours=draw(st.integers(0, PURCHASE_DAYS * 24)))
            cents = draw(st.one_of(st.integers(100, 60_000), st.integers(60_000, 300_000)))
            purchase: dict[str, Any] = {
                "kind": "purchase",
                "order_id": order_id,
                "member_id": member_id,
                "amount": money(cents),
                "currency": "USD",
                "occurred_at": iso(bought),
            }
            if draw(st.integers(0, 5)) == 0:
                purchase["guarantee"] = "trial-90"  # points pending 90 days, not 30
            categories = draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True))
            if categories:
                purchase["items"] = [
                    {"sku": f"sku-{c}", "category": c, "quantity": 1, "unit_price": "1.00"}
                    for c in categories
                ]
            others.append(purchase)
            left = cents
            later = draw(st.lists(st.integers(0, REFUND_DAYS * 24), max_size=2, unique=True))
            for r, after in enumerate(sorted(later)):
                if left == 0:
                    break
                refunded = draw(st.one_of(st.none(), st.integers(1, left)))
                left = 0 if refunded is None else left - refunded
                refund: dict[str, Any] = {
                    "kind": "refund",
                    "order_id": order_id,
                    "refund_id": f"r{n}-{p}-{r}",
                    "occurred_at": iso(bought + timedelta(hours=after)),
                }
                if refunded is not None:
                    refund["amount"] = money(refunded)
                others.append(refund)
        for x in range(draw(st.integers(0, 2))):
            redeemed = enrolled + timedelta(hours=draw(st.integers(0, PURCHASE_DAYS * 24)))
            others.append(
                {
                    "kind": "redemption",
                    "member_id": member_id,
                    "redemption_id": f"x{n}-{x}",
                    "points": draw(st.integers(1, 400)),
                    "occurred_at": iso(redeemed),
                }
            )
    # The lines of a file come in any order: the import puts them in time order.
    return draw(st.permutations(members + others))


def referrals(ledger: Ledger, member_id: str) -> list[dict[str, Any]]:
    made = representations.referrals(member_id, ledger.referrals(member_id, limit=1000))
    return [{k: v for k, v in item.items() if k != "causes"} for item in made]


def changes(ledger: Ledger, member_id: str) -> list[tuple[str, Any]]:
    """The member's recorded changes in order: type and data, without the cause and the
    sealed personal data (each ledger seals under keys of its own)."""
    return [
        (e["type"], {k: v for k, v in e["data"].items() if k not in UNCOMPARED})
        for e in ledger.member_events(member_id, limit=100_000)
    ]


@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records=histories(), batch=st.sampled_from([1, 3, 250]))
def test_an_import_ends_as_the_same_records_posted_one_by_one(
    records: list[dict[str, Any]], batch: int
) -> None:
    live, live_clock = in_memory(BASE)
    refused = post_one_by_one(live, live_clock, records)
    live_clock.set(END)

    imported, _ = in_memory(END)
    report, results = imports.run(imported, lines(records), "prop", batch_size=batch)

    assert report.read == len(records)
    rejected = {r.line: r.problem for r in results if r.status == "rejected"}
    assert rejected == {line: domain_problem(error) for line, error in refused.items()}
    assert {r.status for r in results} <= {"applied", "rejected"}
    members = member_ids(records)
    assert statuses(imported, members) == statuses(live, members)
    for member_id in members:
        assert referrals(imported, member_id) == referrals(live, member_id), member_id
        assert changes(imported, member_id) == changes(live, member_id), member_id
    # The scheduler then catches both up alike.
    assert imported.record_due(END) == live.record_due(END)
    for member_id in members:
        assert changes(imported, member_id) == changes(live, member_id), member_id
