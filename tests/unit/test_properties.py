"""Properties of the ledger under random sequences of enrolments, purchases, refunds, redemptions,
cancellations and the passing of time.

Two in-memory ledgers get the same commands at the same clock: ``live`` keeps members in its cache,
snapshots often and runs the scheduler often; ``lazy`` has no cache and never runs the scheduler.
After every step the points balance, every lot, the replayed history and the other ledger must
agree.
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.vault import Vault
from api import representations
from domain.clock import FixedClock
from domain.errors import DomainError
from domain.ledger import Ledger
from domain.members import LineItem, LotStatus, Member, Terms, member_uuid
from tests.answers import answers

from .storefront import IN_MEMORY, START

MEMBERS = ("m0", "m1", "m2")
WHO = st.sampled_from(("m0", "m0", "m1", "m2"))  # m2 is not enrolled until a step does it
CATEGORIES = ("books", "toys", "garden", "food")
REWARDS = ("coffee", "voucher-10", "free-shipping")
GUARANTEES = ("satisfaction", "trial-90", "plus-10", "double", "outcome-365")

minutes = st.integers(1, 600).map(lambda n: timedelta(minutes=n))
days = st.integers(1, 60).map(lambda n: timedelta(days=n))
long_days = st.integers(100, 400).map(lambda n: timedelta(days=n))

enrol = st.tuples(st.just("enrol"), st.sampled_from(MEMBERS))
buy = st.tuples(
    st.just("buy"),
    WHO,
    st.one_of(st.integers(1, 60_000), st.integers(60_000, 700_000)),  # cents
    st.frozensets(st.sampled_from(CATEGORIES), max_size=2),
    st.one_of(st.none(), st.none(), st.none(), st.sampled_from(GUARANTEES)),
    # How long before now the order happened: mostly now, sometimes late, rarely out of range.
    st.one_of(
        st.just(timedelta(0)),
        st.just(timedelta(0)),
        st.integers(1, 90 * 24).map(lambda h: timedelta(hours=h)),
        st.sampled_from([timedelta(minutes=-5), timedelta(minutes=-6), timedelta(days=731)]),
    ),
)
refund = st.tuples(
    st.just("refund"),
    st.integers(0, 50),  # which order, modulo the orders so far
    st.sampled_from(["full", "partial", "partial", "over"]),
    st.integers(1, 100_000),  # cents
)
redeem = st.tuples(
    st.just("redeem"),
    WHO,
    st.one_of(
        st.integers(1, 150).map(str), st.integers(1, 2000).map(str), st.sampled_from(REWARDS)
    ),
)
cancel = st.tuples(st.just("cancel"), st.integers(0, 50))
advance = st.tuples(st.just("advance"), st.one_of(minutes, days, long_days), st.booleans())
repeat = st.tuples(st.just("repeat"), st.integers(0, 50))
schedule = st.tuples(st.just("schedule"))
STEPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "enrol": enrol,
    "buy": buy,
    "refund": refund,
    "redeem": redeem,
    "cancel": cancel,
    "advance": advance,
    "repeat": repeat,
    "schedule": schedule,
}
# How often each kind of step comes up, by repetition.
WEIGHTED = ["buy"] * 5 + ["redeem"] * 3 + ["advance"] * 4 + ["refund"] * 2
WEIGHTED += ["cancel", "enrol", "repeat", "schedule"]
commands = st.lists(st.sampled_from(WEIGHTED).flatmap(STEPS.__getitem__), min_size=15, max_size=50)


@dataclass
class Run:
    clock: FixedClock
    live: Ledger
    lazy: Ledger
    orders: list[tuple[str, str, Decimal]] = field(default_factory=list)
    redemptions: list[str] = field(default_factory=list)
    enrolled: set[str] = field(default_factory=set)
    counter: int = 0
    # What each member's status was at the last moment of an instant, before the clock moved.
    seen: list[tuple[datetime, str, dict[str, Any]]] = field(default_factory=list)

    def both(self, action: str, *args: Any) -> Any:
        """Run one use case on both ledgers; they must answer alike, result or refusal."""
        outcomes = []
        for ledger in (self.live, self.lazy):
            try:
                outcomes.append(getattr(answers(ledger), action)(*args))
            except DomainError as error:
                outcomes.append(type(error))
        assert outcomes[0] == outcomes[1], (action, args)
        return outcomes[0]

    def step(self, command: tuple[Any, ...]) -> None:
        kind = command[0]
        now = self.clock.now()
        self.counter += 1
        if kind == "enrol":
            outcome = self.both("enrol", command[1], f"{command[1]}@example.com", None, "p")
            if not isinstance(outcome, type):
                self.enrolled.add(command[1])
        elif kind == "buy":
            _, member_id, cents, categories, guarantee, before = command
            order_id = f"o-{self.counter}"
            amount = Decimal(cents).scaleb(-2)
            items = [LineItem(f"sku-{c}", c, 1, Decimal("1.00")) for c in sorted(categories)]
            occurred_at = None if before == timedelta(0) else now - before
            outcome = self.both(
                "record_purchase",
                order_id,
                member_id,
                amount,
                "USD",
                occurred_at,
                items,
                guarantee,
                "p",
            )
            if not isinstance(outcome, type):
                self.orders.append((order_id, member_id, amount))
        elif kind == "refund" and self.orders:
            _, which, how, cents = command
            order_id, _, amount = self.orders[which % len(self.orders)]
            requested = {
                "full": None,
                "partial": min(Decimal(cents).scaleb(-2), amount),
                "over": amount + Decimal(cents).scaleb(-2),
            }[how]
            outcome = self.both(
                "refund", order_id, f"r-{self.counter}", requested, "changed mind", "p"
            )
            if not isinstance(outcome, type):
                owner = answers(self.live).purchase(order_id)["member_id"]
                assert outcome[0]["tier"] == answers(self.live).member_status(owner)["tier"]["name"]
        elif kind == "redeem":
            _, member_id, what = command
            redemption_id = f"red-{self.counter}"
            reward, points = (None, int(what)) if what.isdigit() else (what, None)
            outcome = self.both("redeem", member_id, redemption_id, reward, points, "p")
            if not isinstance(outcome, type):
                self.redemptions.append(redemption_id)
                available = answers(self.live).member_status(member_id)["points"]["available"]
                assert outcome[0]["points_available"] == available
        elif kind == "cancel" and self.redemptions:
            outcome = self.both(
                "cancel_redemption", self.redemptions[command[1] % len(self.redemptions)], "p"
            )
            if outcome[1]:
                available = answers(self.live).member_status(outcome[0]["member_id"])["points"][
                    "available"
                ]
                assert outcome[0]["points_available"] == available
        elif kind == "repeat" and self.orders:
            order_id, member_id, amount = self.orders[command[1] % len(self.orders)]
            outcome = self.both(
                "record_purchase", order_id, member_id, amount, "USD", None, None, None, "p"
            )
            # The first post may have named items, a guarantee or occurred_at: then it conflicts.
            assert isinstance(outcome, type) or outcome[1] is False
        elif kind == "advance":
            _, delta, run_scheduler = command
            for member_id in sorted(self.enrolled):
                self.seen.append((now, member_id, answers(self.live).member_status(member_id)))
            self.clock.advance(delta)
            if run_scheduler:
                self.schedule()
        elif kind == "schedule":
            self.schedule()

    def schedule(self) -> None:
        self.live.record_due()
        assert self.live.record_due() == 0, "a second scheduler run records nothing"


def state(member: Member) -> dict[str, Any]:
    return {k: v for k, v in vars(member).items() if k != "_pending_events"}


def check_member(run: Run, member_id: str) -> None:
    live_status = answers(run.live).member_status(member_id)
    lazy_status = answers(run.lazy).member_status(member_id)
    # The outcome never depends on when the scheduler last ran, nor on the cache.
    assert live_status == lazy_status

    points = live_status["points"]
    assert points["available"] + points["pending"] == (
        points["lifetime_earned"] - points["clawed_back"] - points["redeemed"] - points["expired"]
    )
    assert points["pending"] == sum(lot["points"] for lot in points["pending_lots"])
    assert all(lot["points"] > 0 for lot in points["pending_lots"])

    uid = member_uuid(member_id)
    member: Member = run.live.repository.get(uid)
    events = list(run.live.events.get(uid))
    assert member.version == len(events)

    # Replaying the stored history (from the latest snapshot, and from nothing) gives the
    # member the cache holds.
    from_snapshot: Member = run.live.repository.get(uid, version=member.version)
    from_events: Member = functools.reduce(lambda m, e: e.mutate(m), events, None)  # type: ignore[arg-type, return-value]
    assert state(from_snapshot) == state(member)
    assert state(from_events) == state(member)
    replayed = representations.status(from_events.status(run.clock.now(), run.live.terms()))
    assert representations.opened(replayed, run.live.sealer) == live_status
    check_status_holds_until_it_changes(from_events, run.clock.now(), run.live.terms())
    # A read model keeps the member's customer-value facts from its state: they must be what
    # the events alone fold to.
    assert member.value_facts() == from_events.value_facts()

    taken: dict[str, int] = defaultdict(int)
    debt_incurred = 0
    for event in events:
        if isinstance(event, Member.PointsRedeemed | Member.PurchaseRefunded):
            for lot_id, n in event.taken.items():
                assert n > 0
                taken[lot_id] += n
        if isinstance(event, Member.PurchaseRefunded):
            debt_incurred += event.debt
        if isinstance(event, Member.PointsExpired):
            taken[event.lot] += event.points
    settled = 0
    lots = member.lots
    for lot in lots.lots.values():
        assert 0 <= lot.remaining <= lot.points, lot
        # No lot is spent twice: what redemptions, clawbacks and expiry took is what left it,
        # apart from debt it repaid.
        assert taken[lot.id] <= lot.points - lot.remaining, lot
        settled += lot.points - lot.remaining - taken[lot.id]
        if lot.id not in lots.open:
            assert lot.remaining == 0
    assert settled == debt_incurred - lots.debt
    if lots.debt > 0:
        # Debt is repaid by the next lot to become available, so none is left open beside it.
        assert not any(lots.lots[i].status is LotStatus.AVAILABLE for i in lots.open)


def check_status_holds_until_it_changes(member: Member, now: datetime, terms: Terms) -> None:
    """A read model serves the status it stored until ``status_changes_at``: at every instant
    before that, the status must read the same (apart from ``as_of``)."""
    until = member.status_changes_at(now, terms)
    horizon = until if until is not None else now + timedelta(days=3 * 365)
    assert horizon > now
    stored = {**representations.status(member.status(now, terms)), "as_of": None}
    span = horizon - now
    probes = [now + span / 3, now + span / 2, horizon - timedelta(microseconds=1)]
    for probe in probes:
        found = representations.status(member.status(probe, terms))
        assert {**found, "as_of": None} == stored, (now, until, probe)


@settings(
    max_examples=int(os.environ.get("DAIFUKU_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(commands=commands)
def test_random_histories_keep_the_books_balanced(commands: list[tuple[Any, ...]]) -> None:
    clock = FixedClock(START)
    live = Ledger(
        env={**IN_MEMORY, "AGGREGATE_CACHE_MAXSIZE": "100"},
        clock=clock,
        snapshot_interval=4,
        sealer=Vault.in_memory(),
    )
    lazy = Ledger(env=IN_MEMORY, clock=clock, sealer=Vault.in_memory())
    run = Run(clock, live, lazy)
    run.step(("enrol", "m0"))
    run.step(("enrol", "m1"))
    for command in commands:
        run.step(command)
        for member_id in sorted(run.enrolled):
            check_member(run, member_id)
    # Any member's status can be computed as of a past instant from the events alone.
    for moment, member_id, status in run.seen:
        assert answers(lazy).member_status(member_id, as_of=moment) == status
