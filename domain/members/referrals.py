"""The member's side of referrals: the friends it referred, and the code it enrolled with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from domain.program import ProgramRules


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
