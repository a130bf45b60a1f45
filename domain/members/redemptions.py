"""Redemptions: points spent on a reward, oldest lots first, and given back on cancellation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.members.events import MemberEvent, lot_refs
from domain.members.lots import LotStatus

if TYPE_CHECKING:
    from domain.members.member import Member


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
    """The lot that gives back what a redemption took from ``from_lot``. '#' is outside the id
    alphabet, so no two (redemption, lot) pairs give the same name."""
    return f"redemption:{redemption_id}#{from_lot}"


# Events: each change runs again on every replay.


class PointsRedeemed(MemberEvent):
    TOPIC = "domain.members:Member.PointsRedeemed"
    class_version = 2
    redemption_id: str
    points: int
    reward: str | None
    taken: dict[str, int]

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["taken"] = lot_refs(state["taken"])

    def change(self, member: Member) -> None:
        member.lots.take(self.taken)
        member.redeemed += self.points
        member.redemptions[self.redemption_id] = Redemption(
            redemption_id=self.redemption_id,
            member_id=self.member_id,
            points=self.points,
            reward=self.reward,
            taken={member.lots.resolve(ref): n for ref, n in self.taken.items()},
            redeemed_at=self.at,
            available_after=member.lots.spendable_points(),
        )


class RedemptionCancelled(MemberEvent):
    TOPIC = "domain.members:Member.RedemptionCancelled"
    class_version = 2
    redemption_id: str
    returned: list[dict[str, Any]]  # points, expires_at and from_lot of each part

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        for part in state["returned"]:
            part["from_lot"] = f"#{part['from_lot']}"

    def change(self, member: Member) -> None:
        redemption = member.redemptions[self.redemption_id]
        member.redeemed -= redemption.points
        lots = member.lots
        expiring = 0
        for part in self.returned:
            lot_id = returned_lot(self.redemption_id, lots.resolve(part["from_lot"]))
            lot = lots.add(lot_id, part["points"], LotStatus.AVAILABLE, self.at, part["expires_at"])
            # Points the member was told of already come back told: one notice per lot's points.
            lot.expiry_noticed = lots[part["from_lot"]].expiry_noticed
            lots.settle_debt(lot)
            if lot.expires_at <= self.at:
                expiring += lot.remaining
        # Returned points past their expiry expire at once, right after this event.
        member.redemptions[self.redemption_id] = redemption.cancelled(
            self.at, lots.spendable_points() - expiring
        )
