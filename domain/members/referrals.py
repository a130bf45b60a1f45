"""The member's side of referrals: the friends it referred, and the code it enrolled with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from domain.members.events import MemberEvent, lot_refs
from domain.program import ProgramRules

if TYPE_CHECKING:
    from domain.members.member import Member


class ReferralState(Enum):
    REGISTERED = "registered"
    QUALIFIED = "qualified"
    REWARDED = "rewarded"
    VOIDED = "voided"
    CAPPED = "capped"


OPEN = (ReferralState.REGISTERED, ReferralState.QUALIFIED)
EARNING = (ReferralState.QUALIFIED, ReferralState.REWARDED)


@dataclass(frozen=True)
class AgreedTerms:
    """The terms a referral keeps for life: those in force when it was registered."""

    referrer_points: int
    referee_points: int
    qualifying_amount: Decimal
    cap: int
    cap_days: int

    @classmethod
    def of(cls, rules: ProgramRules) -> AgreedTerms:
        terms = rules.referrals
        return cls(
            terms.referrer_points,
            terms.referee_points,
            terms.qualifying_amount,
            terms.cap,
            terms.cap_days,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgreedTerms:
        return cls(
            int(data["referrer_points"]),
            int(data["referee_points"]),
            Decimal(data["qualifying_amount"]),
            int(data["cap"]),
            int(data["cap_days"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """As events store them and the API shows them."""
        return {
            "referrer_points": self.referrer_points,
            "referee_points": self.referee_points,
            "qualifying_amount": str(self.qualifying_amount),
            "cap": self.cap,
            "cap_days": self.cap_days,
        }


@dataclass(slots=True)
class MadeReferral:
    """A friend who enrolled with this member's code."""

    referee_id: str
    code: str
    terms: AgreedTerms
    registered_at: datetime
    seq: int  # the n-th friend: orders rewards due at the same instant
    state: ReferralState = ReferralState.REGISTERED
    qualified_at: datetime | None = None
    rewarded_at: datetime | None = None
    voided_at: datetime | None = None
    capped_at: datetime | None = None
    order_id: str | None = None
    reward_at: datetime | None = None
    causes: dict[str, str] = field(default_factory=dict)

    @property
    def lot_id(self) -> str:
        return f"referral:{self.referee_id}"

    def steps(self) -> list[str]:
        """The steps of the funnel past ``registered`` this referral has reached."""
        reached = {
            "qualified": self.qualified_at,
            "rewarded": self.rewarded_at,
            "voided": self.voided_at,
            "capped": self.capped_at,
        }
        return [step for step, at in reached.items() if at is not None]


@dataclass(slots=True)
class ReceivedReferral:
    """The code this member enrolled with, and where its own reward stands."""

    referrer_id: str
    code: str
    terms: AgreedTerms
    state: ReferralState = ReferralState.REGISTERED
    order_id: str | None = None

    @property
    def lot_id(self) -> str:
        return f"referred-by:{self.referrer_id}"


# Events: each change runs again on every replay.


class ReferredBy(MemberEvent):
    """This member enrolled with another member's referral code."""

    TOPIC = "domain.members:Member.ReferredBy"

    referrer_id: str
    code: str
    terms: dict[str, Any]

    def change(self, member: Member) -> None:
        terms = AgreedTerms.from_dict(self.terms)
        member.referral = ReceivedReferral(self.referrer_id, self.code, terms)


class ReferralRegistered(MemberEvent):
    """A friend enrolled with this member's referral code."""

    TOPIC = "domain.members:Member.ReferralRegistered"

    referee_id: str
    code: str
    terms: dict[str, Any]

    def change(self, member: Member) -> None:
        member.referrals[self.referee_id] = MadeReferral(
            referee_id=self.referee_id,
            code=self.code,
            terms=AgreedTerms.from_dict(self.terms),
            registered_at=self.at,
            seq=len(member.referral_order),
            causes={"registered": self.cause},
        )
        member.referral_order.append(self.referee_id)


class ReferralQualified(MemberEvent):
    """The friend's first purchase of at least the threshold: a pending reward for both."""

    TOPIC = "domain.members:Member.ReferralQualified"

    class_version = 2
    referee_id: str
    order_id: str
    points: int
    reward_at: datetime
    expires_at: datetime

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.pop("lot")  # a lot is opened whenever the reward has points

    def change(self, member: Member) -> None:
        referral = member.referrals[self.referee_id]
        referral.state = ReferralState.QUALIFIED
        referral.qualified_at = self.at
        referral.order_id = self.order_id
        referral.reward_at = self.reward_at
        referral.causes["qualified"] = self.cause
        member.qualified_referrals.append(self.referee_id)
        if self.points > 0:
            member.award(referral.lot_id, self.points, self.reward_at, self.expires_at)


class ReferralCapped(MemberEvent):
    """The friend qualified, but the referrer had reached the cap: no reward for either."""

    TOPIC = "domain.members:Member.ReferralCapped"

    referee_id: str
    order_id: str

    def change(self, member: Member) -> None:
        referral = member.referrals[self.referee_id]
        referral.state = ReferralState.CAPPED
        referral.capped_at = self.at
        referral.order_id = self.order_id
        referral.causes["capped"] = self.cause


class ReferralRewarded(MemberEvent):
    """The qualifying purchase's return window passed: the rewards stand."""

    TOPIC = "domain.members:Member.ReferralRewarded"

    referee_id: str

    def change(self, member: Member) -> None:
        referral = member.referrals[self.referee_id]
        referral.state = ReferralState.REWARDED
        referral.rewarded_at = self.at
        referral.causes["rewarded"] = self.cause
        member.qualified_referrals.remove(self.referee_id)


class ReferralVoided(MemberEvent):
    """The qualifying purchase was refunded inside its window: the reward is taken back."""

    TOPIC = "domain.members:Member.ReferralVoided"

    class_version = 2
    referee_id: str
    refund_id: str
    points_clawed_back: int
    taken: dict[str, int]
    debt: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["taken"] = lot_refs(state["taken"])

    def change(self, member: Member) -> None:
        referral = member.referrals[self.referee_id]
        referral.state = ReferralState.VOIDED
        referral.voided_at = self.at
        referral.causes["voided"] = self.cause
        member.qualified_referrals.remove(self.referee_id)
        member.claw_back(self.taken, self.points_clawed_back, self.debt)


class RefereeRewardPending(MemberEvent):
    """This member's own reward for enrolling with a code, pending like the purchase."""

    TOPIC = "domain.members:Member.RefereeRewardPending"

    class_version = 2
    referrer_id: str
    order_id: str
    points: int
    available_at: datetime
    expires_at: datetime

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.pop("lot")  # a lot is opened whenever the reward has points

    def change(self, member: Member) -> None:
        referral = member.received_referral()
        referral.state = ReferralState.QUALIFIED
        referral.order_id = self.order_id
        if self.points > 0:
            member.award(referral.lot_id, self.points, self.available_at, self.expires_at)


class RefereeReferralCapped(MemberEvent):
    TOPIC = "domain.members:Member.RefereeReferralCapped"
    referrer_id: str
    order_id: str

    def change(self, member: Member) -> None:
        referral = member.received_referral()
        referral.state = ReferralState.CAPPED
        referral.order_id = self.order_id


class RefereeRewardVoided(MemberEvent):
    TOPIC = "domain.members:Member.RefereeRewardVoided"
    class_version = 2
    referrer_id: str
    refund_id: str
    points_clawed_back: int
    taken: dict[str, int]
    debt: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["taken"] = lot_refs(state["taken"])

    def change(self, member: Member) -> None:
        member.received_referral().state = ReferralState.VOIDED
        member.claw_back(self.taken, self.points_clawed_back, self.debt)
