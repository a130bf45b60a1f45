"""The analytics the ledger answers by folding its members (any instant); the read models
answer the same figures from their rows (now). domain/analytics.py and domain/value.py hold
the rules both use."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain import analytics, eventlog, value
from domain.members import Member

if TYPE_CHECKING:
    from domain.ledger import Ledger


def enrolled_by(ledger: Ledger, moment: datetime) -> list[str]:
    """The members enrolled by ``moment``, in the order they enrolled."""
    return [
        event.member_id
        # Not break: writers in other processes may commit in another order than their times.
        for event in eventlog.member_events_of_types(ledger, "Enrolled")
        if event.timestamp <= moment
    ]


def members_at(ledger: Ledger, moment: datetime, now: bool) -> list[Member]:
    """Every member enrolled by ``moment``: as the ledger held them then, or, ``now``, copies
    as they are (with whatever was recorded while the copies were taken)."""
    if now:
        return [ledger.member_copy(m) for m in enrolled_by(ledger, moment)]
    return [ledger.member_at(m, moment) for m in enrolled_by(ledger, moment)]


def summary(ledger: Ledger, as_of: datetime | None = None) -> dict[str, Any]:
    """Members by tier and stage, points outstanding, guarantee liability and the referral
    funnel of every member as of the instant."""
    moment = as_of or ledger.clock.now()
    terms = ledger.terms() if as_of is None else ledger.program_at(moment)
    members = members_at(ledger, moment, now=as_of is None)
    return analytics.summary(
        moment,
        terms.rules,
        (
            (
                member.status(moment, terms).holding(),
                member.promises(),
                [made.steps() for made in member.referrals.values()],
            )
            for member in members
        ),
    )


def customer_value(
    ledger: Ledger,
    as_of: datetime | None = None,
    value_class: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """Per member: net contribution, value class, RFM and lifecycle stage (domain/value.py).

    Classes, scores and the Pareto share rank every member with purchases as of the instant;
    ``value_class`` then keeps one class, and ``after``/``limit`` page through the rest.
    """
    moment = as_of or ledger.clock.now()
    terms = ledger.program_at(moment)
    members = {m.member_id: m for m in members_at(ledger, moment, now=as_of is None)}
    return value.report(
        [member.value_facts() for member in members.values()],
        moment,
        terms.rules,
        lambda member_id: members[member_id].status(moment, terms).stage.value,
        value_class,
        after,
        limit,
    )
