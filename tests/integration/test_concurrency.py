"""Concurrent writers: no lost update, an order id recorded once, even across two server processes.

Threads start together at a barrier. Two Ledger instances on one PostgreSQL database stand for two
server processes: the in-process lock does not cover them, only the event store's version check.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from domain.clock import FixedClock
from domain.errors import Conflict
from domain.ledger import Ledger
from domain.members import member_uuid
from tests.answers import answers

from .ledgers import START, open_ledger

THREADS = 8
T = TypeVar("T")


def all_at_once(calls: list[Callable[[], T]]) -> list[T | BaseException]:
    """Run every call in its own thread, released together; results or errors in order."""
    barrier = threading.Barrier(len(calls))
    results: list[T | BaseException] = [RuntimeError("never ran")] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return results


def purchase(ledger: Ledger, order_id: str, member_id: str, amount: str = "10.00") -> Any:
    return lambda: answers(ledger).record_purchase(
        order_id, member_id, Decimal(amount), "USD", None, [], None, "t"
    )


def coffee(ledger: Ledger, redemption_id: str) -> Any:
    return lambda: answers(ledger).redeem("m1", redemption_id, "coffee", None, "t")


def enrolled(ledger: Ledger, *member_ids: str) -> None:
    for member_id in member_ids:
        answers(ledger).enrol(member_id, f"{member_id}@example.com", None, "t")


def check_purchases_landed(ledger: Ledger, member_id: str, orders: int, each: int) -> None:
    status = answers(ledger).member_status(member_id)
    assert status["points"]["pending"] == orders * each
    assert status["points"]["lifetime_earned"] == orders * each
    assert status["tier"]["qualifying_spend"] == f"{orders * each}.00"
    events = ledger.member_events(member_id, limit=1000)
    recorded = [e["data"]["order_id"] for e in events if e["type"] == "PurchaseRecorded"]
    assert len(recorded) == len(set(recorded)) == orders
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))


def test_different_purchases_for_one_member_at_once_all_land(database_url: str) -> None:
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as ledger:
        enrolled(ledger, "m1")
        calls = [purchase(ledger, f"o-{t}-{n}", "m1") for t in range(THREADS) for n in range(3)]
        results = all_at_once(calls)
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        check_purchases_landed(ledger, "m1", THREADS * 3, 10)
    with open_ledger(database_url, clock) as fresh:
        check_purchases_landed(fresh, "m1", THREADS * 3, 10)


def test_the_same_order_posted_at_once_is_recorded_once(database_url: str) -> None:
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as ledger:
        enrolled(ledger, "m1")
        results = all_at_once([purchase(ledger, "o-1", "m1") for _ in range(THREADS)])
        created = Counter(r[1] for r in results if isinstance(r, tuple))
        assert created == {True: 1, False: THREADS - 1}, results
        assert len({repr(r[0]) for r in results if isinstance(r, tuple)}) == 1, "same answer"
        check_purchases_landed(ledger, "m1", 1, 10)


@pytest.mark.parametrize("round_", range(3))
def test_one_order_for_two_members_at_once_goes_to_exactly_one(
    database_url: str, round_: int
) -> None:
    clock = FixedClock(START)
    with open_ledger(database_url, clock) as ledger:
        enrolled(ledger, "m1", "m2")
        calls = [purchase(ledger, "o-1", "m1"), purchase(ledger, "o-1", "m2")] * (THREADS // 2)
        results = all_at_once(calls)
        winners = {r[0]["member_id"] for r in results if isinstance(r, tuple)}
        assert len(winners) == 1, results
        (winner,) = winners
        loser = "m2" if winner == "m1" else "m1"
        assert Counter(r[1] for r in results if isinstance(r, tuple)) == {
            True: 1,
            False: THREADS // 2 - 1,
        }
        assert all(isinstance(r, Conflict) for r in results if not isinstance(r, tuple)), results
        assert sum(isinstance(r, Conflict) for r in results) == THREADS // 2
        assert answers(ledger).purchase("o-1")["member_id"] == winner
        check_purchases_landed(ledger, winner, 1, 10)
        assert answers(ledger).member_status(loser)["points"]["lifetime_earned"] == 0
        assert ledger.member_events(loser)[-1]["type"] == "Enrolled"


# Two server processes on one PostgreSQL database.


def two_servers(url: str, clock: FixedClock) -> Any:
    class Servers:
        def __enter__(self) -> tuple[Ledger, Ledger]:
            self.first = open_ledger(url, clock)
            self.second = open_ledger(url, clock)
            return self.first.__enter__(), self.second.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.second.__exit__(None, None, None)
            self.first.__exit__(None, None, None)

    return Servers()


def test_two_processes_posting_different_purchases_for_one_member_lose_none(
    postgres_url: str,
) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        enrolled(a, "m1")
        answers(b).member_status("m1")  # both caches hold the member before the race
        calls = [
            purchase(a if t % 2 else b, f"o-{t}-{n}", "m1")
            for t in range(THREADS)
            for n in range(3)
        ]
        results = all_at_once(calls)
        assert all(isinstance(r, tuple) and r[1] is True for r in results), results
        check_purchases_landed(a, "m1", THREADS * 3, 10)
        check_purchases_landed(b, "m1", THREADS * 3, 10)
        # Each process's cached member caught up with what the other one wrote.
        assert a.repository.get(member_uuid("m1")).version == 1 + THREADS * 3


def test_two_processes_posting_the_same_order_record_it_once(postgres_url: str) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        enrolled(a, "m1")
        answers(b).member_status("m1")
        for n in range(5):
            results = all_at_once(
                [purchase(a if t % 2 else b, f"o-{n}", "m1") for t in range(THREADS)]
            )
            created = Counter(r[1] for r in results if isinstance(r, tuple))
            assert created == {True: 1, False: THREADS - 1}, results
        check_purchases_landed(a, "m1", 5, 10)
        check_purchases_landed(b, "m1", 5, 10)


def test_two_processes_posting_one_order_for_two_members_give_it_to_one(
    postgres_url: str,
) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        enrolled(a, "m1", "m2")
        for n in range(5):
            order_id = f"o-{n}"
            results = all_at_once([purchase(a, order_id, "m1"), purchase(b, order_id, "m2")])
            succeeded = [r for r in results if isinstance(r, tuple)]
            assert len(succeeded) == 1, results
            assert succeeded[0][1] is True
            assert sum(isinstance(r, Conflict) for r in results) == 1, results
            winner = succeeded[0][0]["member_id"]
            assert answers(a).purchase(order_id)["member_id"] == winner
            assert answers(b).purchase(order_id)["member_id"] == winner
        total = sum(answers(a).member_status(m)["points"]["lifetime_earned"] for m in ("m1", "m2"))
        assert total == 5 * 10


def test_two_processes_redeeming_at_once_never_overspend(postgres_url: str) -> None:
    clock = FixedClock(START)
    with two_servers(postgres_url, clock) as (a, b):
        enrolled(a, "m1")
        answers(a).record_purchase("o-1", "m1", Decimal("1000.00"), "USD", None, [], None, "t")
        clock.advance(timedelta(days=30))
        answers(b).member_status("m1")
        results = all_at_once([coffee(a if t % 2 else b, f"red-{t}") for t in range(THREADS)])
        redeemed = [r for r in results if isinstance(r, tuple)]
        assert len(redeemed) == 2, results  # 1,000 points buy two coffees of 500
        assert answers(a).member_status("m1")["points"]["available"] == 0
        assert answers(b).member_status("m1")["points"]["redeemed"] == 1000
