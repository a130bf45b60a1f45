"""Members: enrolment is idempotent, conflicts are refused, every member gets a referral code."""

from __future__ import annotations

import re

import pytest

from domain.errors import Conflict, InvalidInput, UnknownMember
from domain.ledger import Ledger
from tests.answers import answers

from .storefront import START, Shop

CROCKFORD_CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{8}$")


def test_enrolment_returns_a_prospect_with_nothing_earned(ledger: Ledger) -> None:
    status, created = answers(ledger).enrol("cust-1", "ann@example.com", "Ann", "test")
    assert created is True
    assert status["member_id"] == "cust-1"
    assert status["email"] == "ann@example.com"
    assert status["name"] == "Ann"
    assert status["enrolled_at"] == START.isoformat()
    assert status["stage"] == "prospect"
    assert status["tier"]["name"] == "bronze"
    assert status["points"]["available"] == 0
    assert status["points"]["pending"] == 0


def test_enrolling_again_with_the_same_data_is_a_no_op(shop: Shop, ledger: Ledger) -> None:
    first, _ = answers(ledger).enrol("cust-1", "ann@example.com", "Ann", "test")
    shop.buy("o-1", "10.00", member_id="cust-1")
    shop.at(1)
    again, created = answers(ledger).enrol("cust-1", "ann@example.com", "Ann", "test")
    assert created is False
    assert again["referral_code"] == first["referral_code"]
    assert again["enrolled_at"] == first["enrolled_at"]
    assert again["points"]["pending"] == 10, "re-enrolling must not reset the member"
    assert len(shop.events("cust-1", "Enrolled")) == 1


@pytest.mark.parametrize(
    ("email", "name"),
    [("other@example.com", "Ann"), ("ann@example.com", "Anne"), ("ann@example.com", None)],
)
def test_enrolling_again_with_different_data_is_a_conflict(
    ledger: Ledger, email: str, name: str | None
) -> None:
    answers(ledger).enrol("cust-1", "ann@example.com", "Ann", "test")
    with pytest.raises(Conflict):
        answers(ledger).enrol("cust-1", email, name, "test")
    assert answers(ledger).member_status("cust-1")["email"] == "ann@example.com"


@pytest.mark.parametrize(
    ("member_id", "email"),
    [
        ("", "a@example.com"),
        ("x" * 65, "a@example.com"),
        ("has space", "a@example.com"),
        ("slash/id", "a@example.com"),
        ("ok-id", "not-an-email"),
    ],
)
def test_malformed_enrolment_is_refused(ledger: Ledger, member_id: str, email: str) -> None:
    with pytest.raises(InvalidInput):
        answers(ledger).enrol(member_id, email, None, "test")


def test_member_ids_use_the_documented_alphabet(ledger: Ledger) -> None:
    member_id = "Shop.A_b:c-" + "9" * 53
    assert len(member_id) == 64
    _, created = answers(ledger).enrol(member_id, "a@example.com", None, "test")
    assert created


def test_referral_code_is_eight_crockford_base32_characters(ledger: Ledger) -> None:
    codes = set()
    for n in range(300):
        status, _ = answers(ledger).enrol(f"member-{n}", f"m{n}@example.com", None, "test")
        code = status["referral_code"]
        assert CROCKFORD_CODE.match(code), code
        assert not set(code) & set("ILOU")
        codes.add(code)
    assert len(codes) == 300, "codes must tell members apart"


def test_status_of_an_unknown_member_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownMember):
        answers(ledger).member_status("nobody")


def test_snapshots_thin_out_as_a_history_grows() -> None:
    from domain.snapshots import last_checkpoint

    assert [last_checkpoint(v, 100) for v in (99, 100, 199, 799, 800, 1599, 1600, 6399)] == [
        0, 100, 100, 700, 800, 1400, 1600, 5600,
    ]  # fmt: skip
    # The checkpoints never go backwards, so no snapshot is skipped or taken twice.
    marks = [last_checkpoint(v, 100) for v in range(1, 20_000)]
    assert marks == sorted(marks)
    # Snapshot count grows with the log of the history, not with the history itself.
    assert len(set(marks)) < 40
