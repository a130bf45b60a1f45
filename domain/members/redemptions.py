"""Redemptions: points spent on a reward, oldest lots first, and given back on cancellation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class Redemption:
    redemption_id: str
    member_id: str
    points: int
    reward: str | None
    taken: dict[str, int]  # lot id -> points taken from it
    redeemed_at: datetime
    available_after: int  # the balance the first response showed, for repeats
    cancelled_at: datetime | None = None
    available_after_cancel: int | None = None

    @property
    def requested_points(self) -> int | None:
        """The points the request named: none when it named a reward."""
        return None if self.reward else self.points

    def cancelled(self, at: datetime, available_after: int) -> Redemption:
        return replace(self, cancelled_at=at, available_after_cancel=available_after)

    @property
    def available_now(self) -> int:
        """The balance right after the redemption, or after its cancellation once cancelled."""
        if self.cancelled_at is not None and self.available_after_cancel is not None:
            return self.available_after_cancel
        return self.available_after


def returned_lot(redemption_id: str, from_lot: str) -> str:
    """The lot that gives back what a redemption took from ``from_lot``."""
    return f"redemption:{redemption_id}:{from_lot}"
