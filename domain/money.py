"""Money is Decimal inside, a string at the edge, rounded only where a rule says so."""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from domain.errors import InvalidAmount

# ISO 4217 minor units of the currencies a program is likely to run in; others default to 2.
MINOR_UNITS: dict[str, int] = {
    "BHD": 3, "CLP": 0, "IDR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3,
    "OMR": 3, "TND": 3, "UGX": 0, "VND": 0, "XAF": 0, "XOF": 0,
}  # fmt: skip
MAX_AMOUNT = Decimal("1000000.00")
ZERO = Decimal("0")


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))


def format_money(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(minor_unit(currency)))


def check_amount(amount: Decimal, currency: str, field: str = "amount") -> Decimal:
    """A positive amount of at most the currency's minor-unit precision and at most 1,000,000."""
    if not amount.is_finite():
        raise InvalidAmount("must be a finite amount", field)
    if amount <= 0:
        raise InvalidAmount("must be greater than zero", field)
    if amount > MAX_AMOUNT:
        raise InvalidAmount(f"must be at most {MAX_AMOUNT}", field)
    exponent = amount.as_tuple().exponent
    places = MINOR_UNITS.get(currency, 2)
    if isinstance(exponent, int) and -exponent > places:
        raise InvalidAmount(f"{currency} amounts have at most {places} decimal places", field)
    return amount.quantize(minor_unit(currency))


def floor_whole(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def half_even(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_EVEN)
