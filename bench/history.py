"""A shop's history from before Daifuku, generated for the import phase: JSON Lines import records.

``generate(members, records)`` makes, from a fixed seed, ``members`` enrolments (a tenth of them
with the referral code of a member enrolled at least a day earlier) and ``records - members``
more records: about 90% purchases with 1-4 line items, 6.4% refunds and 3.8% redemptions (70,000,
5,000 and 3,000 of the default 80,000), over the four years before ``HISTORY_END``, with the
offsets of the shop's customers. The file is written in the order of an old system's exports
(customers by number, then orders, refunds and redemptions, each by date), not in business-time
order per member: the importer sorts.

Every record is meant to be applied: refunds come after their purchase and never add up to more
than its amount; a redemption spends at most what the member's purchases have made available by
then, counted as the ledger would but lower (1 point per whole USD, before tier multipliers,
bonuses and referral rewards; a lot counted from a day after it matures, 30 days after its
purchase, until a day before it expires, 730 days after that; the oldest spent first), and only
members without refunds redeem, so no clawback takes back what was counted.

``python -m bench.history OUT.jsonl [--members N] [--records N]`` writes a file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from domain.members import referral_code_for

SEED = 20261201
HISTORY_END = datetime(2026, 11, 1, tzinfo=UTC)  # fixed, so that every run imports one file
HISTORY_DAYS = 4 * 365
CURRENCY = "USD"  # the default program's
REFERRED_SHARE = 0.10
EVANGELIST_SHARE = 0.01  # members who bring half of the referrals: a few refer many
NEVER_BUYS = 0.2  # members enrolled who never bought
# Of the records that are not enrolments: 70,000 / 5,000 / 3,000 of the default 80,000.
REFUND_SHARE = 5 / 78
REDEMPTION_SHARE = 3 / 78
RETURN_WINDOW = timedelta(days=30)  # the default program's: points available after it
LOT_LIFETIME = timedelta(days=730)  # from becoming available to expiring
MARGIN = timedelta(days=1)  # between a redemption and the maturing or expiry of lots it counts
OFFSETS = tuple(timezone(timedelta(hours=h)) for h in (9, 9, 9, 0, 1, -5, -8))
CATEGORIES: dict[str, tuple[str, ...]] = {
    "tea": ("4.50", "7.90", "12.00", "18.50", "32.00"),
    "sweets": ("2.80", "3.60", "5.40", "9.90"),
    "tableware": ("14.00", "26.00", "48.00", "95.00"),
    "books": ("9.99", "16.50", "24.00"),
    "stationery": ("1.20", "3.40", "6.80", "12.50"),
    "textiles": ("19.00", "38.00", "64.00"),
    "kitchen": ("8.50", "22.00", "45.00", "120.00"),
    "gifts": ("15.00", "30.00", "50.00", "100.00"),
}
CATEGORY_NAMES = tuple(CATEGORIES)
SKUS_PER_CATEGORY = 20
ITEM_COUNTS, ITEM_COUNT_WEIGHTS = (1, 2, 3, 4), (45, 75, 90, 100)  # cumulative
FIRST_NAMES = ("Aiko", "Ben", "Chiara", "Daichi", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jun")
LAST_NAMES = ("Abe", "Brown", "Costa", "Diaz", "Endo", "Fischer", "Goto", "Hall", "Ito", "Kato")
DOMAINS = ("example.com", "example.net", "example.org")
REASONS = ("damaged", "wrong size", "changed mind", "late delivery")
REDEEMABLE = (20, 20, 25, 50, 50, 100, 150, 200, 500)
CENT = Decimal("0.01")


@dataclass
class Customer:
    number: int
    member_id: str
    enrolled_at: datetime
    offset: timezone
    weight: float  # how often they buy, relative to others
    favourite: str  # the category they buy most
    referrer: str | None = None
    orders: list[Order] = field(default_factory=list)
    refunded: bool = False
    last_at: datetime | None = None  # their latest record so far

    def saw(self, at: datetime) -> None:
        self.last_at = at if self.last_at is None else max(self.last_at, at)


@dataclass
class Order:
    customer: Customer
    at: datetime
    items: list[dict[str, Any]]
    amount: Decimal
    refunded: Decimal = Decimal(0)
    order_id: str = ""  # numbered in date order once every order is known


@dataclass(frozen=True)
class Refund:
    order: Order
    at: datetime
    amount: Decimal | None  # None: the rest of the order
    reason: str | None


@dataclass(frozen=True)
class Redemption:
    customer: Customer
    at: datetime
    points: int


@dataclass(frozen=True)
class History:
    """The records in the order they are written, and what they hold."""

    records: list[dict[str, Any]]
    counts: dict[str, int]  # records by kind
    referred: int  # enrolments with a referral code
    refunded_orders: int
    end: datetime

    def write(self, path: Path) -> int:
        """The records as JSON Lines; the bytes written."""
        with path.open("w", encoding="utf-8") as out:
            for record in self.records:
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        return path.stat().st_size


def stamp(at: datetime, offset: timezone) -> str:
    """RFC 3339 with the customer's offset, to the second."""
    return at.astimezone(offset).isoformat(timespec="seconds")


def generate(
    members: int = 20_000,
    records: int = 100_000,
    seed: int = SEED,
    end: datetime = HISTORY_END,
    prefix: str = "h",
) -> History:
    """``members`` enrolments among ``records`` records in all."""
    if members < 1 or records < members:
        raise ValueError("at least one member, and no fewer records than members")
    rng = random.Random(seed)
    rest = records - members
    refund_count = round(rest * REFUND_SHARE)
    redemption_count = round(rest * REDEMPTION_SHARE)
    customers = _customers(rng, members, end, prefix)
    orders = _orders(rng, customers, rest - refund_count - redemption_count, end)
    refunds = _refunds(rng, orders, refund_count, end)
    redemptions = _redemptions(rng, customers, redemption_count, end)
    # What the history could not hold as refunds or redemptions (a small one) is more orders.
    missing = rest - len(orders) - len(refunds) - len(redemptions)
    orders += _last_orders(rng, customers, missing, end)
    orders.sort(key=lambda o: (o.at, o.customer.number))
    for n, order in enumerate(orders, 1):
        order.order_id = f"{prefix}-o{n:07d}"
    refunds.sort(key=lambda r: (r.at, r.order.order_id))
    redemptions.sort(key=lambda r: (r.at, r.customer.number))
    out = [_member_record(rng, c) for c in customers]
    out += [_purchase_record(o) for o in orders]
    out += [_refund_record(r, f"{prefix}-r{n:06d}") for n, r in enumerate(refunds, 1)]
    out += [_redemption_record(r, f"{prefix}-x{n:06d}") for n, r in enumerate(redemptions, 1)]
    return History(
        records=out,
        counts=dict(Counter(r["kind"] for r in out)),
        referred=sum(1 for c in customers if c.referrer),
        refunded_orders=len({id(r.order) for r in refunds}),
        end=end,
    )


def _customers(rng: random.Random, members: int, end: datetime, prefix: str) -> list[Customer]:
    """Enrolments over the years, more of them lately (the shop grew), in enrolment order."""
    start = end - timedelta(days=HISTORY_DAYS)
    span = (end - start - timedelta(days=7)).total_seconds()  # nobody new in the last week
    offsets = sorted(span * rng.random() ** 0.7 for _ in range(members))
    customers = []
    for n, seconds in enumerate(offsets, 1):
        weight = 0.0 if rng.random() < NEVER_BUYS else rng.lognormvariate(0, 0.8)
        customers.append(
            Customer(
                number=n,
                member_id=f"{prefix}-c{n:06d}",
                enrolled_at=start + timedelta(seconds=int(seconds)),
                offset=rng.choice(OFFSETS),
                weight=weight,
                favourite=rng.choice(CATEGORY_NAMES),
            )
        )
    evangelists = [c for c in customers if rng.random() < EVANGELIST_SHARE]
    for customer in rng.sample(customers, round(members * REFERRED_SHARE)):
        referrer = _earlier(rng, customers, evangelists, customer)
        if referrer is not None:
            customer.referrer = referrer.member_id
    for customer in customers:
        customer.saw(customer.enrolled_at)
    return customers


def _earlier(
    rng: random.Random, customers: list[Customer], evangelists: list[Customer], who: Customer
) -> Customer | None:
    """A member enrolled at least a day before ``who``: an evangelist half the time."""
    latest = who.enrolled_at - timedelta(days=1)
    for pool in (evangelists, customers) if rng.random() < 0.5 else (customers,):
        lo, hi = 0, len(pool)  # the pool is in enrolment order: those early enough, a prefix
        while lo < hi:
            mid = (lo + hi) // 2
            if pool[mid].enrolled_at <= latest:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            return pool[rng.randrange(lo)]
    return None


def _orders(
    rng: random.Random, customers: list[Customer], count: int, end: datetime
) -> list[Order]:
    """``count`` orders among the customers who buy, each after the customer enrolled."""
    buyers = [c for c in customers if c.weight > 0] or customers
    weights = [c.weight or 1.0 for c in buyers]
    latest = end - timedelta(hours=1)
    orders = [
        _order(rng, c, c.enrolled_at + timedelta(hours=1), latest)
        for c in rng.choices(buyers, weights, k=count)
    ]
    return [o for o in orders if o is not None]


def _order(
    rng: random.Random, customer: Customer, first: datetime, latest: datetime
) -> Order | None:
    """An order of the customer at a second between ``first`` and ``latest``."""
    if latest <= first:
        return None
    at = first + timedelta(seconds=rng.randrange(int((latest - first).total_seconds()) + 1))
    while any(o.at == at for o in customer.orders):  # one order a second per customer
        at += timedelta(seconds=1)
    items = []
    for _ in range(rng.choices(ITEM_COUNTS, cum_weights=ITEM_COUNT_WEIGHTS)[0]):
        category = customer.favourite if rng.random() < 0.6 else rng.choice(CATEGORY_NAMES)
        sku = rng.randrange(SKUS_PER_CATEGORY)
        prices = CATEGORIES[category]
        items.append(
            {
                "sku": f"{category[:3].upper()}-{sku:03d}",
                "category": category,
                "quantity": rng.choice((1, 1, 1, 1, 2, 2, 3, 5)),
                "unit_price": prices[sku % len(prices)],
            }
        )
    amount = sum((Decimal(i["unit_price"]) * i["quantity"] for i in items), Decimal(0))
    order = Order(customer, at, items, amount)
    customer.orders.append(order)
    customer.saw(at)
    return order


def _refunds(rng: random.Random, orders: list[Order], count: int, end: datetime) -> list[Refund]:
    """Half of the refunded orders refunded in full, the rest in part, a tenth of them twice."""
    latest = end - timedelta(hours=1)
    candidates = [o for o in orders if o.at < latest - timedelta(days=1)]
    refunds: list[Refund] = []
    for order in rng.sample(candidates, min(count, len(candidates))):
        if len(refunds) >= count:
            break
        at = _after(rng, order.at, timedelta(days=45), latest)
        kind = rng.random()
        if kind < 0.5:
            amount = None if rng.random() < 0.7 else order.amount  # the rest, or said
            refunds.append(_refund(rng, order, at, amount))
            continue
        part = _part(rng, order)
        refunds.append(_refund(rng, order, at, part))
        if kind < 0.9 or len(refunds) >= count or at >= latest - timedelta(hours=1):
            continue
        again = _after(rng, at, timedelta(days=20), latest)
        rest = order.amount - order.refunded
        amount = None if rng.random() < 0.5 else max(CENT, _share(rng, rest, 0.3, 1.0))
        refunds.append(_refund(rng, order, again, amount))
    return refunds


def _refund(rng: random.Random, order: Order, at: datetime, amount: Decimal | None) -> Refund:
    rest = order.amount - order.refunded
    assert amount is None or CENT <= amount <= rest, (amount, rest)
    order.refunded += rest if amount is None else amount
    order.customer.refunded = True
    order.customer.saw(at)
    reason = rng.choice(REASONS) if rng.random() < 0.8 else None
    return Refund(order, at, amount, reason)


def _part(rng: random.Random, order: Order) -> Decimal:
    """One line of the order when it has several, else a share of it; less than the whole."""
    lines = [Decimal(i["unit_price"]) * i["quantity"] for i in order.items]
    if len(lines) > 1 and rng.random() < 0.6:
        return rng.choice(lines)
    return max(CENT, min(order.amount - CENT, _share(rng, order.amount, 0.1, 0.6)))


def _share(rng: random.Random, amount: Decimal, low: float, high: float) -> Decimal:
    share = Decimal(str(round(rng.uniform(low, high), 3)))
    return (amount * share).quantize(CENT, rounding=ROUND_DOWN)


def _after(rng: random.Random, at: datetime, within: timedelta, latest: datetime) -> datetime:
    """A second from an hour to ``within`` after ``at``, not after ``latest``."""
    seconds = rng.randrange(3600, int(within.total_seconds()))
    return min(at + timedelta(seconds=seconds), max(latest, at + timedelta(seconds=1)))


def _redemptions(
    rng: random.Random, customers: list[Customer], count: int, end: datetime
) -> list[Redemption]:
    """Small redemptions by members with points to spend, well after the purchases they spend."""
    latest = end - timedelta(hours=1)
    candidates = [c for c in customers if c.orders and not c.refunded]
    rng.shuffle(candidates)
    redemptions: list[Redemption] = []
    for customer in candidates:
        if len(redemptions) >= count:
            break
        earliest = min(o.at for o in customer.orders) + RETURN_WINDOW + MARGIN
        if earliest >= latest - timedelta(hours=2):
            continue
        times = sorted(_after(rng, earliest, latest - earliest, latest) for _ in range(2))
        lots = sorted(
            [o.at + RETURN_WINDOW, int(o.amount)] for o in customer.orders if o.amount >= 1
        )
        for at in times[: 1 if rng.random() < 0.75 else 2]:
            points = _spend(rng, lots, at)
            if points and len(redemptions) < count:
                redemptions.append(Redemption(customer, at, points))
                customer.saw(at)
    return redemptions


def _spend(rng: random.Random, lots: list[list[Any]], at: datetime) -> int:
    """A small number of the points counted available at ``at``, spent oldest first; 0: none."""
    usable = [
        lot
        for lot in lots
        if lot[0] <= at - MARGIN and at + MARGIN < lot[0] + LOT_LIFETIME and lot[1] > 0
    ]
    available = sum(lot[1] for lot in usable)
    choices = [p for p in REDEEMABLE if p <= available // 2] or [
        p for p in REDEEMABLE if p <= available
    ]
    if not choices:
        return 0
    points = wanted = rng.choice(choices)
    for lot in usable:
        take = min(lot[1], wanted)
        lot[1] -= take
        wanted -= take
    return int(points)


def _last_orders(
    rng: random.Random, customers: list[Customer], count: int, end: datetime
) -> list[Order]:
    """Orders after each customer's latest record, so that nothing counted on changes."""
    orders: list[Order] = []
    buyers = [c for c in customers if c.weight > 0] or customers
    latest = end - timedelta(hours=1)
    for _ in range(count * 100):
        if len(orders) >= count:
            break
        customer = rng.choice(buyers)
        first = (customer.last_at or customer.enrolled_at) + timedelta(hours=1)
        if (order := _order(rng, customer, first, latest)) is not None:
            orders.append(order)
    return orders


def _member_record(rng: random.Random, customer: Customer) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first.lower()}.{last.lower()}.{customer.number}@{rng.choice(DOMAINS)}"
    record: dict[str, Any] = {"kind": "member", "member_id": customer.member_id, "email": email}
    if rng.random() < 0.85:
        record["name"] = f"{first} {last}"
    record["enrolled_at"] = stamp(customer.enrolled_at, customer.offset)
    if customer.referrer:
        record["referral_code"] = referral_code_for(customer.referrer)
    return record


def _purchase_record(order: Order) -> dict[str, Any]:
    return {
        "kind": "purchase",
        "order_id": order.order_id,
        "member_id": order.customer.member_id,
        "amount": str(order.amount),
        "currency": CURRENCY,
        "occurred_at": stamp(order.at, order.customer.offset),
        "items": order.items,
    }


def _refund_record(refund: Refund, refund_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "refund",
        "order_id": refund.order.order_id,
        "refund_id": refund_id,
    }
    if refund.amount is not None:
        record["amount"] = str(refund.amount)
    if refund.reason is not None:
        record["reason"] = refund.reason
    record["occurred_at"] = stamp(refund.at, refund.order.customer.offset)
    return record


def _redemption_record(redemption: Redemption, redemption_id: str) -> dict[str, Any]:
    return {
        "kind": "redemption",
        "member_id": redemption.customer.member_id,
        "redemption_id": redemption_id,
        "points": redemption.points,
        "occurred_at": stamp(redemption.at, redemption.customer.offset),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("out", type=Path, help="the JSON Lines file to write")
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    history = generate(args.members, args.records, args.seed)
    size = history.write(args.out)
    print(f"{len(history.records)} records ({history.counts}), {size:,} bytes: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
