"""The referral cap under concurrency: 30 friends qualifying at once give 20 rewards, 10 capped.

Each qualification changes the referee and the referrer in one transaction, so the referrer's
version number serialises them: within one process behind its lock, across processes (two
Ledger instances on one PostgreSQL database) through the event store's version check.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

from domain.clock import FixedClock
from domain.ledger import Ledger
from tests.answers import answers

from .ledgers import START, open_ledger
from .test_concurrency import all_at_once, two_servers

FRIENDS = 30
CAP = 20
REFERRER_POINTS = 500
REFEREE_POINTS = 250


def friend(n: int) -> str:
    return f"friend-{n:02d}"


def enrol_friends(ledger: Ledger, referrer: str = "ann") -> None:
    """The referrer and 30 friends, each enrolled with the referrer's code."""
    answers(ledger).enrol(referrer, f"{referrer}@example.com", None, "t")
    code = answers(ledger).member_status(referrer)["referral_code"]
    for n in range(FRIENDS):
        _, created = answers(ledger).enrol(
            friend(n), f"{friend(n)}@example.com", None, "t", code.lower()
        )
        assert created
    states = [r["state"] for r in answers(ledger).referrals(referrer, limit=1000)]
    assert states == ["registered"] * FRIENDS


def enrolment(ledger: Ledger, n: int, code: str) -> Any:
    return lambda: answers(ledger).enrol(friend(n), f"{friend(n)}@example.com", None, "t", code)


def qualifying_purchase(ledger: Ledger, n: int) -> Any:
    return lambda: answers(ledger).record_purchase(
        f"F-{n:02d}", friend(n), Decimal("50.00"), "USD", None, [], None, f"buy-{n}"
    )


def check_cap_held(ledger: Ledger, referrer: str = "ann") -> set[str]:
    """Exactly 20 rewards and 10 capped, the same in both members' ledgers; the rewarded friends."""
    referrals = answers(ledger).referrals(referrer, limit=1000)
    assert Counter(r["state"] for r in referrals) == {"qualified": CAP, "capped": FRIENDS - CAP}
    points = answers(ledger).member_status(referrer)["points"]
    assert points["pending"] == CAP * REFERRER_POINTS
    assert points["lifetime_earned"] == CAP * REFERRER_POINTS
    assert [lot["points"] for lot in points["pending_lots"]] == [REFERRER_POINTS] * CAP

    events = ledger.member_events(referrer, limit=1000)
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    qualified = {e["data"]["referee_id"] for e in events if e["type"] == "ReferralQualified"}
    capped = {e["data"]["referee_id"] for e in events if e["type"] == "ReferralCapped"}
    assert (len(qualified), len(capped)) == (CAP, FRIENDS - CAP)
    assert qualified | capped == {friend(n) for n in range(FRIENDS)}
    listed = {r["referee_id"] for r in referrals if r["state"] == "qualified"}
    assert listed == qualified

    for n in range(FRIENDS):
        kinds = [e["type"] for e in ledger.member_events(friend(n), limit=1000)]
        rewarded = friend(n) in qualified
        assert kinds.count("RefereeRewardPending") == int(rewarded), kinds
        assert kinds.count("RefereeReferralCapped") == int(not rewarded), kinds
        pending = answers(ledger).member_status(friend(n))["points"]["pending"]
        assert pending == 50 + (REFEREE_POINTS if rewarded else 0)
    return qualified


def check_rewards_recorded_once(ledger: Ledger, qualified: set[str], referrer: str = "ann") -> None:
    events = ledger.member_events(referrer, limit=1000)
    rewarded = [e["data"]["referee_id"] for e in events if e["type"] == "ReferralRewarded"]
    assert sorted(rewarded) == sorted(qualified)
    points = answers(ledger).member_status(referrer)["points"]
    assert (points["available"], points["pending"]) == (CAP * REFERRER_POINTS, 0)
    states = Counter(r["state"] for r in answers(ledger).referrals(referrer, limit=1000))
    assert states == {"rewarded": CAP, "capped": FRIENDS - CAP}


def test_thirty_friends_qualifying_at_once_give_twenty_rewards_and_ten_capped(
    postgres_url: str,
) -> None:
    clock = FixedClock(START)
    with open_ledger(postgres_url, clock) as ledger:
        enrol_friends(ledger)
        results = all_at_once([qualifying_purchase(ledger, n) for n in range(FRIENDS)])
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        qualified = check_cap_held(ledger)
    with open_ledger(postgres_url, clock) as fresh:
        assert check_cap_held(fresh) == qualified


def test_two_processes_qualifying_thirty_friends_at_once_give_twenty_rewards(
    postgres_url: str,
) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        enrol_friends(a)
        # Both caches hold the referrer and every friend before the race.
        for member_id in ["ann"] + [friend(n) for n in range(FRIENDS)]:
            answers(b).member_status(member_id)
        results = all_at_once([qualifying_purchase(a if n % 2 else b, n) for n in range(FRIENDS)])
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        qualified = check_cap_held(a)
        assert check_cap_held(b) == qualified

        # Both schedulers run at once when the window has passed: each reward recorded once.
        clock.advance(timedelta(days=30))
        recorded = all_at_once([a.record_due, b.record_due])
        assert all(isinstance(r, int) for r in recorded), recorded
        check_rewards_recorded_once(a, qualified)
        check_rewards_recorded_once(b, qualified)
    with open_ledger(postgres_url, clock) as fresh:
        check_rewards_recorded_once(fresh, qualified)


def test_two_processes_enrolling_thirty_friends_with_one_code_at_once_register_them_all(
    postgres_url: str,
) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        answers(a).enrol("ann", "ann@example.com", None, "t")
        code = answers(b).member_status("ann")["referral_code"]
        results = all_at_once([enrolment(a if n % 2 else b, n, code) for n in range(FRIENDS)])
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        for ledger in (a, b):
            referrals = answers(ledger).referrals("ann", limit=1000)
            assert sorted(r["referee_id"] for r in referrals) == [friend(n) for n in range(FRIENDS)]
            assert {r["state"] for r in referrals} == {"registered"}
            events = ledger.member_events("ann", limit=1000)
            assert [e["version"] for e in events] == list(range(1, FRIENDS + 2))
        # Then the 30 qualify at once, as above.
        results = all_at_once([qualifying_purchase(a if n % 2 else b, n) for n in range(FRIENDS)])
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        assert check_cap_held(a) == check_cap_held(b)
