"""Histories from before Daifuku: import records, and the same records posted one by one.

An import must leave every member as if Daifuku had been running all along: as if each record
had arrived through the single requests on its own day. ``post_one_by_one`` is that reference:
a clock moved to each record's time, then the Ledger's own command. ``statuses`` and
``changes`` are what the tests compare.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.vault import Vault
from domain.clock import FixedClock
from domain.errors import DomainError
from domain.ledger import Ledger
from domain.members import LineItem, referral_code_for
from tests.answers import answers
from tests.unit.storefront import IN_MEMORY

# At one instant an enrolment comes before the purchases, a purchase before its refunds.
RANK = {"member": 0, "purchase": 1, "refund": 2, "redemption": 3}
TIME_FIELD = {
    "member": "enrolled_at",
    "purchase": "occurred_at",
    "refund": "occurred_at",
    "redemption": "occurred_at",
}


# Import records, as a shop's export would hold them.


def member(
    member_id: str, enrolled_at: str = "2023-04-01T10:00:00+09:00", code_of: str | None = None
) -> dict[str, Any]:
    record = {
        "kind": "member",
        "member_id": member_id,
        "email": f"{member_id}@example.com",
        "enrolled_at": enrolled_at,
    }
    if code_of is not None:
        record["referral_code"] = referral_code_for(code_of)
    return record


def purchase(order_id: str, member_id: str, amount: str, occurred_at: str) -> dict[str, Any]:
    return {
        "kind": "purchase",
        "order_id": order_id,
        "member_id": member_id,
        "amount": amount,
        "currency": "USD",
        "occurred_at": occurred_at,
    }


def refund(refund_id: str, order_id: str, amount: str, occurred_at: str) -> dict[str, Any]:
    return {
        "kind": "refund",
        "order_id": order_id,
        "refund_id": refund_id,
        "amount": amount,
        "occurred_at": occurred_at,
    }


def redemption(redemption_id: str, member_id: str, points: int, at: str) -> dict[str, Any]:
    return {
        "kind": "redemption",
        "member_id": member_id,
        "redemption_id": redemption_id,
        "points": points,
        "occurred_at": at,
    }


def in_memory(now: datetime) -> tuple[Ledger, FixedClock]:
    """A fresh ledger on the in-memory store, and its clock (at ``now``)."""
    clock = FixedClock(now)
    return Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory()), clock


def at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record[TIME_FIELD[record["kind"]]])


def lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """The records as the lines of an import file."""
    return [json.dumps(record) for record in records]


def in_time_order(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) in the order they happened."""
    numbered = list(enumerate(records, start=1))
    return sorted(numbered, key=lambda pair: (at(pair[1]), RANK[pair[1]["kind"]], pair[0]))


def post_one_by_one(
    ledger: Ledger, clock: FixedClock, records: list[dict[str, Any]]
) -> dict[int, DomainError]:
    """Each record through the Ledger's single command, the clock at the record's time (so
    every purchase is live: its occurred_at is now). The records refused, by line."""
    refused: dict[int, DomainError] = {}
    for line, record in in_time_order(records):
        clock.set(at(record))
        try:
            post(ledger, record, f"live:{line}")
        except DomainError as error:
            refused[line] = error
    return refused


def post(ledger: Ledger, record: dict[str, Any], cause: str) -> None:
    kind = record["kind"]
    if kind == "member":
        ledger.enrol(
            record["member_id"],
            record["email"],
            record.get("name"),
            cause,
            record.get("referral_code"),
            enrolled_at=at(record),
        )
    elif kind == "purchase":
        items = [
            LineItem(i["sku"], i["category"], i["quantity"], Decimal(i["unit_price"]))
            for i in record.get("items", [])
        ]
        ledger.record_purchase(
            record["order_id"],
            record["member_id"],
            Decimal(record["amount"]),
            record["currency"],
            at(record),
            items,
            record.get("guarantee"),
            cause,
        )
    elif kind == "refund":
        amount = record.get("amount")
        ledger.refund(
            record["order_id"],
            record["refund_id"],
            None if amount is None else Decimal(amount),
            record.get("reason"),
            cause,
        )
    else:
        ledger.redeem(record["member_id"], record["redemption_id"], None, record["points"], cause)


def statuses(ledger: Ledger, member_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each member's status now, as the API answers it."""
    return {member_id: answers(ledger).member_status(member_id) for member_id in member_ids}


def changes(ledger: Ledger, member_ids: Iterable[str]) -> Counter[tuple[str, str, datetime]]:
    """Every recorded change as (member, event type, business time), counted: a change
    recorded twice shows."""
    return Counter(
        (member_id, event["type"], event["occurred_at"])
        for member_id in member_ids
        for event in ledger.member_events(member_id, limit=100_000)
    )


def member_ids(records: Iterable[dict[str, Any]]) -> list[str]:
    return [record["member_id"] for record in records if record["kind"] == "member"]


def shop_history(members: int, start: datetime, seed: int = 12) -> list[dict[str, Any]]:
    """A shop's history over about three years from ``start``, every record valid: members
    (every fifth referred by the one before), each with a few purchases, later ones sometimes
    refunded in part, and a redemption once the first purchase's points are available."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for n in range(members):
        member_id = f"cust-{n:04d}"
        enrolled = start + timedelta(hours=n)
        member: dict[str, Any] = {
            "kind": "member",
            "member_id": member_id,
            "email": f"{member_id}@example.com",
            "enrolled_at": enrolled.isoformat(),
        }
        if n % 5 == 4:
            member["referral_code"] = referral_code_for(f"cust-{n - 1:04d}")
        records.append(member)
        bought = enrolled
        for p in range(rng.randrange(1, 6)):
            bought += timedelta(days=rng.randrange(1, 250))
            cents = rng.randrange(1_000, 150_000)
            order_id = f"{member_id}-o{p}"
            category = rng.choice(["tea", "cups", "pots"])
            records.append(
                {
                    "kind": "purchase",
                    "order_id": order_id,
                    "member_id": member_id,
                    "amount": str(Decimal(cents).scaleb(-2)),
                    "currency": "USD",
                    "occurred_at": bought.isoformat(),
                    "items": [{"sku": "s", "category": category, "quantity": 1, "unit_price": "1"}],
                }
            )
            if p == 0:
                redeemed = bought + timedelta(days=35)
                records.append(
                    {
                        "kind": "redemption",
                        "member_id": member_id,
                        "redemption_id": f"{member_id}-x",
                        "points": 10,
                        "occurred_at": redeemed.isoformat(),
                    }
                )
            elif rng.random() < 0.3:
                refunded = bought + timedelta(days=rng.randrange(1, 60))
                records.append(
                    {
                        "kind": "refund",
                        "order_id": order_id,
                        "refund_id": f"{order_id}-r",
                        "amount": str(Decimal(rng.randrange(1, cents)).scaleb(-2)),
                        "occurred_at": refunded.isoformat(),
                    }
                )
    return records
