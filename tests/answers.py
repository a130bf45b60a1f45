"""The Ledger's answers as the API renders them, so tests can compare with the JSON they know.

``answers(ledger).record_purchase(...)`` returns ``(body, created)`` as the HTTP layer builds it
(without ``position``); every other attribute is the ledger's own.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from api import representations
from domain.ledger import Ledger
from domain.members import LineItem


class Answers:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def member_status(self, member_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        found = representations.status(self.ledger.member_status(member_id, as_of))
        return representations.opened(found, self.ledger.sealer)

    def enrol(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        written = self.ledger.enrol(*args, **kwargs)
        found = representations.opened(representations.status(written.value), self.ledger.sealer)
        return found, written.created

    def record_purchase(
        self,
        order_id: str,
        member_id: str,
        amount: Decimal,
        currency: str,
        occurred_at: datetime | None,
        items: list[LineItem] | None,
        guarantee: str | None,
        cause: str,
    ) -> tuple[dict[str, Any], bool]:
        written = self.ledger.record_purchase(
            order_id, member_id, amount, currency, occurred_at, items, guarantee, cause
        )
        return representations.recorded_purchase(written.value), written.created

    def refund(
        self,
        order_id: str,
        refund_id: str,
        amount: Decimal | None = None,
        reason: str | None = None,
        cause: str = "test",
    ) -> tuple[dict[str, Any], bool]:
        written = self.ledger.refund(order_id, refund_id, amount, reason, cause)
        return representations.recorded_refund(written.value, refund_id), written.created

    def claim_guarantee(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        written = self.ledger.claim_guarantee(*args, **kwargs)
        return representations.claim(written.value), written.created

    def redeem(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        written = self.ledger.redeem(*args, **kwargs)
        return representations.redemption(written.value), written.created

    def cancel_redemption(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        written = self.ledger.cancel_redemption(*args, **kwargs)
        return representations.redemption(written.value), written.created

    def purchase(self, order_id: str) -> dict[str, Any]:
        return representations.purchase(self.ledger.purchase(order_id))

    def referrals(self, member_id: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        made = self.ledger.referrals(member_id, after=after, limit=limit)
        return representations.referrals(member_id, made, after=after)


def answers(ledger: Ledger) -> Answers:
    return Answers(ledger)
