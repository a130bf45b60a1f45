"""How the member's typed state is written into snapshots: each value type by a name of its own.

Dataclasses are stored as their fields, the bookkeeping classes as their attributes, Enums as
their values; nested values are transcoded in turn.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from domain.members import followups, lots, personal, purchases, redemptions, referrals, tiers


class FieldsTranscoding(Transcoding):
    def __init__(self, cls: type, name: str) -> None:
        self.type = cls
        self.name = name
        self.fields = [f.name for f in dataclasses.fields(cls)]

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.fields}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class AttributesTranscoding(Transcoding):
    def __init__(self, cls: type, name: str) -> None:
        self.type = cls
        self.name = name

    def encode(self, obj: Any) -> dict[str, Any]:
        return dict(vars(obj))

    def decode(self, data: dict[str, Any]) -> Any:
        obj: Any = object.__new__(self.type)
        vars(obj).update(data)
        return obj


class EnumTranscoding(Transcoding):
    def __init__(self, cls: type[Enum], name: str) -> None:
        self.type = cls
        self.name = name

    def encode(self, obj: Enum) -> Any:
        return obj.value

    def decode(self, data: Any) -> Any:
        return self.type(data)


VALUES = (
    lots.Lot,
    personal.PersonalData,
    purchases.GuaranteeTerms,
    purchases.Refund,
    purchases.Claim,
    purchases.Purchase,
    redemptions.Redemption,
    referrals.AgreedTerms,
    referrals.MadeReferral,
    referrals.ReceivedReferral,
    tiers.Upgrade,
    followups.Followup,
    followups.FollowupStep,
)
BOOKKEEPING = (
    lots.PointLots,
    purchases.OpenGuarantees,
    tiers.SpendHistory,
    tiers.TierStanding,
    followups.MemberFollowups,
)
ENUMS: tuple[type[Enum], ...] = (lots.LotStatus, referrals.ReferralState)


def register(transcoder: JSONTranscoder) -> None:
    for value in VALUES:
        transcoder.register(FieldsTranscoding(value, f"member.{value.__name__}"))
    for kept in BOOKKEEPING:
        transcoder.register(AttributesTranscoding(kept, f"member.{kept.__name__}"))
    for enum in ENUMS:
        transcoder.register(EnumTranscoding(enum, f"member.{enum.__name__}"))
