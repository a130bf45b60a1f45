"""A storefront driving one in-memory Ledger, so unit tests read in the domain's words."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.clock import FixedClock
from domain.ledger import Ledger
from domain.members import LineItem
from tests.answers import answers

START = datetime(2024, 1, 1, tzinfo=UTC)
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def day(n: float) -> datetime:
    """Business day ``n`` of the tests: midnight of START plus n days."""
    return START + timedelta(days=n)


def items(*categories: str) -> list[LineItem]:
    return [LineItem(f"sku-{c}", c, 1, Decimal("1.00")) for c in categories]


class Shop:
    """A storefront on one in-memory Ledger; its helpers keep tests in the domain's words."""

    def __init__(self, ledger: Ledger, clock: FixedClock) -> None:
        self.ledger = ledger
        self.clock = clock

    def at(self, n: float) -> Shop:
        self.clock.set(day(n))
        return self

    def enrol(self, member_id: str = "m1", email: str | None = None) -> dict[str, Any]:
        status, _ = answers(self.ledger).enrol(
            member_id, email or f"{member_id}@example.com", None, "test"
        )
        return status

    def buy(
        self,
        order_id: str,
        amount: str,
        member_id: str = "m1",
        categories: Iterable[str] = (),
        guarantee: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        result, created = answers(self.ledger).record_purchase(
            order_id,
            member_id,
            Decimal(amount),
            "USD",
            occurred_at,
            items(*categories),
            guarantee,
            "test",
        )
        assert created
        return result

    def refund(
        self, order_id: str, refund_id: str, amount: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        result, created = answers(self.ledger).refund(
            order_id, refund_id, None if amount is None else Decimal(amount), reason, "test"
        )
        assert created
        return result

    def redeem(
        self,
        redemption_id: str,
        points: int | None = None,
        reward: str | None = None,
        member_id: str = "m1",
    ) -> dict[str, Any]:
        result, created = answers(self.ledger).redeem(
            member_id, redemption_id, reward, points, "test"
        )
        assert created
        return result

    def status(self, member_id: str = "m1") -> dict[str, Any]:
        return answers(self.ledger).member_status(member_id)

    def points(self, member_id: str = "m1") -> dict[str, Any]:
        points: dict[str, Any] = self.status(member_id)["points"]
        return points

    def tier(self, member_id: str = "m1") -> str:
        tier: str = self.status(member_id)["tier"]["name"]
        return tier

    def events(self, member_id: str = "m1", kind: str | None = None) -> list[dict[str, Any]]:
        events = self.ledger.member_events(member_id, limit=10_000)
        return [e for e in events if kind is None or e["type"] == kind]
