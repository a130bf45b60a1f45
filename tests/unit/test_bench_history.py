"""The import bench's generated history: deterministic, consistent, applied without a refusal."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.vault import Vault
from bench.history import History, generate
from domain.clock import FixedClock
from domain.errors import DomainError
from domain.ledger import Ledger
from domain.members import LineItem, referral_code_for

from .storefront import IN_MEMORY

MEMBERS, RECORDS = 150, 900


@pytest.fixture(scope="module")
def history() -> History:
    return generate(MEMBERS, RECORDS)


def when(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record.get("enrolled_at") or record["occurred_at"])


def test_same_seed_same_file(history: History, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    history.write(first)
    generate(MEMBERS, RECORDS).write(second)
    assert first.read_bytes() == second.read_bytes()
    assert generate(MEMBERS, RECORDS, seed=1).records != history.records
    lines = first.read_text().splitlines()
    assert [json.loads(line) for line in lines] == history.records


def test_counts_and_shape(history: History) -> None:
    counts = Counter(r["kind"] for r in history.records)
    assert len(history.records) == RECORDS and counts["member"] == MEMBERS
    assert counts["purchase"] > 8 * counts["refund"] > 0 and counts["redemption"] > 0
    assert history.counts == dict(counts)
    assert (
        len({r["order_id"] for r in history.records if r["kind"] == "purchase"})
        == counts["purchase"]
    )
    for record in history.records:
        at = when(record)
        assert at.utcoffset() is not None and at < history.end
        assert at > history.end - timedelta(days=4 * 365 + 1)
        if record["kind"] == "purchase":
            assert record["currency"] == "USD" and 1 <= len(record["items"]) <= 4
            total = sum(Decimal(i["unit_price"]) * i["quantity"] for i in record["items"])
            assert Decimal(record["amount"]) == total > 0


def test_refunds_after_their_order_and_within_its_amount(history: History) -> None:
    orders = {r["order_id"]: r for r in history.records if r["kind"] == "purchase"}
    refunded: dict[str, Decimal] = {}
    refunds = sorted((r for r in history.records if r["kind"] == "refund"), key=when)
    for refund in refunds:
        order = orders[refund["order_id"]]
        assert when(refund) > when(order)
        rest = Decimal(order["amount"]) - refunded.get(refund["order_id"], Decimal(0))
        amount = Decimal(refund.get("amount", rest))
        assert Decimal("0.01") <= amount <= rest
        refunded[refund["order_id"]] = refunded.get(refund["order_id"], Decimal(0)) + amount


def test_referral_codes_are_of_members_enrolled_earlier(history: History) -> None:
    members = [r for r in history.records if r["kind"] == "member"]
    by_code = {referral_code_for(m["member_id"]): m for m in members}
    referred = [m for m in members if "referral_code" in m]
    assert referred and len(referred) == history.referred
    for member in referred:
        referrer = by_code[member["referral_code"]]
        assert referrer["member_id"] != member["member_id"]
        assert when(referrer) < when(member)
        assert referrer["email"] != member["email"]


def test_every_record_is_applied_in_business_time_order(history: History) -> None:
    """What the importer will do, on the in-memory ledger: nothing is refused."""
    clock = FixedClock(history.end)
    ledger = Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory())
    refused = []
    ordered = sorted(enumerate(history.records), key=lambda pair: (when(pair[1]), pair[0]))
    for _, record in ordered:
        clock.set(when(record))
        try:
            apply(ledger, record)
        except DomainError as error:
            refused.append((record, repr(error)))
    assert refused == []


def apply(ledger: Ledger, record: dict[str, Any]) -> None:
    kind = record["kind"]
    if kind == "member":
        ledger.enrol(
            record["member_id"],
            record["email"],
            record.get("name"),
            "test",
            record.get("referral_code"),
            when(record),
        )
    elif kind == "purchase":
        items = [
            LineItem(i["sku"], i["category"], i["quantity"], Decimal(i["unit_price"]))
            for i in record["items"]
        ]
        ledger.record_purchase(
            record["order_id"],
            record["member_id"],
            Decimal(record["amount"]),
            record["currency"],
            when(record),
            items,
            None,
            "test",
        )
    elif kind == "refund":
        amount = Decimal(record["amount"]) if "amount" in record else None
        ledger.refund(record["order_id"], record["refund_id"], amount, record.get("reason"), "test")
    else:
        ledger.redeem(record["member_id"], record["redemption_id"], None, record["points"], "test")
