"""Referrals: codes as people type them, both members' ledgers step by step, voiding, replay."""

from __future__ import annotations

import functools
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from adapters.vault import Vault
from api import representations
from domain.clock import FixedClock
from domain.errors import Conflict, SelfReferral, UnknownReferralCode
from domain.ledger import Ledger
from domain.members import CROCKFORD, Member, member_uuid, referral_code_for
from domain.members.personal import normalise_email
from domain.program import ProgramRules, ReferralTerms
from domain.referrals import normalise_code
from tests.answers import answers

from .storefront import IN_MEMORY, START, Shop, day


def code_of(shop: Shop, member_id: str) -> str:
    code: str = shop.status(member_id)["referral_code"]
    return code


def refer(
    shop: Shop, friend: str, code: str, cause: str = "test", email: str | None = None
) -> None:
    _, created = answers(shop.ledger).enrol(
        friend, email or f"{friend}@example.com", None, cause, referral_code=code
    )
    assert created


def made(shop: Shop, referrer: str) -> dict[str, dict[str, Any]]:
    """The referrer's referrals by friend, as the API lists them."""
    return {r["referee_id"]: r for r in answers(shop.ledger).referrals(referrer, limit=1000)}


def timeline(shop: Shop, member_id: str, *kinds: str) -> list[tuple[Any, ...]]:
    """(type, cause, business time) of the member's events of these kinds, in order."""
    return [
        (e["type"], e["data"]["cause"], e["occurred_at"].isoformat())
        for e in shop.events(member_id)
        if e["type"] in kinds
    ]


def iso(n: float) -> str:
    return day(n).isoformat()


def books_balance(points: dict[str, Any]) -> bool:
    """API.md: available + pending = lifetime_earned - clawed_back - redeemed - expired."""
    return bool(
        points["available"] + points["pending"]
        == points["lifetime_earned"]
        - points["clawed_back"]
        - points["redeemed"]
        - points["expired"]
    )


def publish_referral_terms(ledger: Ledger, **terms: Any) -> None:
    rules = ledger.terms().rules
    ledger.publish_program(replace(rules, referrals=replace(rules.referrals, **terms)), "test")


@pytest.fixture
def ann(shop: Shop) -> str:
    """The referrer, enrolled on day 0; returns her code."""
    answers(shop.ledger).enrol("ann", "ann@example.com", None, "enrol-ann")
    return code_of(shop, "ann")


# Codes and emails as people type them.


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("CF27X2C2", "CF27X2C2"),
        ("cf27x2c2", "CF27X2C2"),
        ("CF27-X2C2", "CF27X2C2"),
        (" cf27 x2c2 ", "CF27X2C2"),
        ("C-F-2-7-X-2-C-2", "CF27X2C2"),
        # Crockford base32 reads I and L as 1 and O as 0, in either case.
        ("o1il-LOIo", "01111010"),
        ("IIIIOOOO", "11110000"),
    ],
)
def test_a_code_is_read_as_a_person_may_type_it(typed: str, canonical: str) -> None:
    assert normalise_code(typed) == canonical


@pytest.mark.parametrize(
    "typed", ["", "ABC", "ABCDEFGHJ", "ABCDEFGU", "ABCD_EFG", "ABCDEFG!", "ÄBCDEFGH", "ABCD.EFGH"]
)
def test_what_cannot_be_a_code_is_none(typed: str) -> None:
    assert normalise_code(typed) is None


@pytest.mark.parametrize("member_id", ["ann", "bob", "cust-1001", "x" * 64, "a.b:c_d-e"])
def test_every_issued_code_is_8_crockford_characters_and_its_own_canonical_form(
    member_id: str,
) -> None:
    code = referral_code_for(member_id)
    assert len(code) == 8
    assert set(code) <= set(CROCKFORD)
    assert not set(code) & set("ILOU")
    assert normalise_code(code) == code
    assert normalise_code(f"{code[:4].lower()}-{code[4:].lower()}") == code


@pytest.mark.parametrize(
    ("email", "normalised"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann@Example.COM", "ann@example.com"),
        ("ann+friends@example.com", "ann@example.com"),
        ("ANN+Promo+2026@EXAMPLE.com", "ann@example.com"),
        (" ann+x@example.com ", "ann@example.com"),
        ("ann.smith@example.com", "ann.smith@example.com"),
        ("anne@example.com", "anne@example.com"),
    ],
)
def test_an_email_is_lower_cased_without_its_plus_tag(email: str, normalised: str) -> None:
    assert normalise_email(email) == normalised


def test_a_code_typed_with_confusable_letters_and_hyphens_finds_its_owner(shop: Shop) -> None:
    # A referrer whose code has a 0 and a 1, so the friend can type them as O and l.
    referrer = next(
        f"ref-{n}" for n in range(10_000) if {"0", "1"} <= set(referral_code_for(f"ref-{n}"))
    )
    shop.enrol(referrer)
    code = code_of(shop, referrer)
    typed = code.lower().replace("0", "o").replace("1", "l")
    typed = f"{typed[:4]}-{typed[4:]}"
    assert typed != code.lower()
    refer(shop, "bob", typed)
    assert made(shop, referrer)["bob"]["code"] == code
    assert made(shop, referrer)["bob"]["state"] == "registered"


# Fraud rules at enrolment.


def test_an_unknown_code_is_refused_naming_the_field_and_enrols_nobody(
    shop: Shop, ann: str
) -> None:
    # Change one character: a well-formed code that nobody holds.
    other = ann[:-1] + ("0" if ann[-1] != "0" else "1")
    for typed in (other, "ABC", "not a code!"):
        with pytest.raises(UnknownReferralCode) as refused:
            answers(shop.ledger).enrol("bob", "bob@example.com", None, "t", referral_code=typed)
        assert refused.value.field == "referral_code"
    with pytest.raises(Exception, match="not enrolled"):
        shop.status("bob")
    assert made(shop, "ann") == {}


@pytest.mark.parametrize(
    "email", ["ann@example.com", "ANN@example.com", "ann+2@example.com", "Ann+Promo@EXAMPLE.COM"]
)
def test_self_referral_by_the_same_normalised_email_is_refused(
    shop: Shop, ann: str, email: str
) -> None:
    before = shop.events("ann")
    with pytest.raises(SelfReferral) as refused:
        answers(shop.ledger).enrol("ann-2", email, None, "t", referral_code=ann)
    assert refused.value.field == "referral_code"
    assert shop.events("ann") == before
    with pytest.raises(Exception, match="not enrolled"):
        shop.status("ann-2")


def test_a_referrer_whose_email_has_a_tag_cannot_refer_the_plain_address(shop: Shop) -> None:
    answers(shop.ledger).enrol("ann", "Ann+Shop@example.com", None, "t")
    with pytest.raises(SelfReferral):
        answers(shop.ledger).enrol(
            "ann-2", "ann@example.com", None, "t", referral_code=code_of(shop, "ann")
        )


def test_a_member_cannot_use_its_own_code(shop: Shop, ann: str) -> None:
    with pytest.raises(SelfReferral):
        answers(shop.ledger).enrol("ann", "ann@example.com", None, "t", referral_code=ann)


def test_a_friend_is_referred_once(shop: Shop, ann: str) -> None:
    shop.enrol("carol")
    refer(shop, "bob", ann)
    with pytest.raises(Conflict) as refused:
        answers(shop.ledger).enrol(
            "bob", "bob@example.com", None, "t", referral_code=code_of(shop, "carol")
        )
    assert refused.value.field == "referral_code"
    # The same code again (however typed) and no code at all are the same enrolment.
    for typed in (ann, ann.lower(), None):
        _, created = answers(shop.ledger).enrol(
            "bob", "bob@example.com", None, "t", referral_code=typed
        )
        assert not created
    # A member enrolled without a code cannot be referred afterwards.
    with pytest.raises(Conflict):
        answers(shop.ledger).enrol("carol", "carol@example.com", None, "t", referral_code=ann)
    assert list(made(shop, "ann")) == ["bob"]
    assert made(shop, "carol") == {}
    assert len(shop.events("bob", "ReferredBy")) == 1


# Both ledgers, step by step, with the cause of every step.


def test_a_rewarded_referral_step_by_step_in_both_ledgers(shop: Shop, ann: str) -> None:
    refer(shop, "bob", ann, cause="enrol-bob")
    answers(shop.ledger).record_purchase(
        "B-0", "bob", Decimal("49.99"), "USD", None, [], None, "buy-B-0"
    )  # under the threshold
    shop.at(2)
    answers(shop.ledger).record_purchase(
        "B-1", "bob", Decimal("60.00"), "USD", None, [], None, "buy-B-1"
    )
    shop.at(3)
    answers(shop.ledger).record_purchase(
        "B-2", "bob", Decimal("70.00"), "USD", None, [], None, "buy-B-2"
    )
    shop.at(32)
    # ann: the reward available, the referral rewarded; bob: B-0's lot, B-1's, his reward
    assert shop.ledger.record_due(cause="run-32") == 5

    assert timeline(
        shop, "ann", "Enrolled", "ReferralRegistered", "ReferralQualified", "PointsBecameAvailable",
        "ReferralRewarded",
    ) == [
        ("Enrolled", "enrol-ann", iso(0)),
        ("ReferralRegistered", "enrol-bob", iso(0)),
        ("ReferralQualified", "buy-B-1", iso(2)),
        ("PointsBecameAvailable", "run-32", iso(32)),
        ("ReferralRewarded", "run-32", iso(32)),
    ]  # fmt: skip
    (qualified,) = shop.events("ann", "ReferralQualified")
    assert (
        qualified["data"] | {"referee_id": "bob", "order_id": "B-1", "points": 500}
        == (qualified["data"])
    )
    assert qualified["data"]["reward_at"] == iso(32)
    (rewarded,) = shop.events("ann", "ReferralRewarded")
    assert rewarded["data"]["referee_id"] == "bob"

    assert timeline(
        shop, "bob", "Enrolled", "ReferredBy", "PurchaseRecorded", "RefereeRewardPending",
        "PointsBecameAvailable",
    ) == [
        ("Enrolled", "enrol-bob", iso(0)),
        ("ReferredBy", "enrol-bob", iso(0)),
        ("PurchaseRecorded", "buy-B-0", iso(0)),
        ("PurchaseRecorded", "buy-B-1", iso(2)),
        ("RefereeRewardPending", "buy-B-1", iso(2)),
        ("PurchaseRecorded", "buy-B-2", iso(3)),
        ("PointsBecameAvailable", "run-32", iso(30)),  # B-0's own lot
        ("PointsBecameAvailable", "run-32", iso(32)),
        ("PointsBecameAvailable", "run-32", iso(32)),
    ]  # fmt: skip
    (pending,) = shop.events("bob", "RefereeRewardPending")
    assert (pending["data"]["referrer_id"], pending["data"]["order_id"]) == ("ann", "B-1")
    assert (pending["data"]["points"], pending["data"]["available_at"]) == (250, iso(32))

    referral = made(shop, "ann")["bob"]
    assert referral["state"] == "rewarded"
    assert referral["causes"] == {
        "registered": "enrol-bob",
        "qualified": "buy-B-1",
        "rewarded": "run-32",
    }
    assert (referral["qualifying_order_id"], referral["rewarded_at"]) == ("B-1", iso(32))
    assert shop.points("ann")["available"] == 500
    # 49 + 60 + 250 available; B-2's 70 waits for its own window
    assert (shop.points("bob")["available"], shop.points("bob")["pending"]) == (359, 70)


def test_a_voided_referral_names_the_refund_in_both_ledgers(shop: Shop, ann: str) -> None:
    refer(shop, "bob", ann, cause="enrol-bob")
    answers(shop.ledger).record_purchase(
        "B-1", "bob", Decimal("60.00"), "USD", None, [], None, "buy-B-1"
    )
    answers(shop.ledger).record_purchase(
        "B-2", "bob", Decimal("80.00"), "USD", None, [], None, "buy-B-2"
    )
    shop.at(5)
    # A refund of another order leaves the referral alone.
    answers(shop.ledger).refund("B-2", "RF-0", None, None, "refund-RF-0")
    assert made(shop, "ann")["bob"]["state"] == "qualified"
    shop.at(10)
    answers(shop.ledger).refund("B-1", "RF-1", Decimal("10.01"), None, "refund-RF-1")

    (voided,) = shop.events("ann", "ReferralVoided")
    assert voided["data"]["cause"] == "refund-RF-1"
    assert (voided["data"]["referee_id"], voided["data"]["refund_id"]) == ("bob", "RF-1")
    assert voided["data"]["points_clawed_back"] == 500
    (theirs,) = shop.events("bob", "RefereeRewardVoided")
    assert (theirs["data"]["cause"], theirs["data"]["refund_id"]) == ("refund-RF-1", "RF-1")
    assert (theirs["data"]["referrer_id"], theirs["data"]["points_clawed_back"]) == ("ann", 250)
    kinds = [e["type"] for e in shop.events("bob")]
    assert kinds.index("PurchaseRefunded") < kinds.index("RefereeRewardVoided")
    referral = made(shop, "ann")["bob"]
    assert referral["state"] == "voided"
    assert referral["causes"]["voided"] == "refund-RF-1"
    assert referral["voided_at"] == iso(10)
    assert (referral["referrer_points"], referral["referee_points"]) == (0, 0)

    shop.at(60)
    assert shop.ledger.record_due(cause="run-60") == 1  # B-1's lot; B-2 was refunded in full
    assert shop.events("ann", "ReferralRewarded") == []
    assert shop.points("ann") | {"available": 0, "pending": 0, "clawed_back": 500} == (
        shop.points("ann")
    )
    # ceil(60 x 10.01 / 60.00) = 11 of B-1's 60 taken back; B-2 refunded in full
    assert shop.points("bob")["available"] == 49


def test_a_guarantee_claim_inside_the_window_voids_the_referral_it_qualified(
    shop: Shop, ann: str
) -> None:
    refer(shop, "bob", ann)
    shop.buy("B-1", "60.00", "bob", guarantee="trial-90")
    shop.at(45)  # past the 30-day return window, inside the 90-day guarantee
    assert made(shop, "ann")["bob"]["state"] == "qualified"
    answers(shop.ledger).claim_guarantee("B-1", "C-1", None, "claim-C-1")
    (claimed,) = shop.events("bob", "GuaranteeClaimed")
    (voided,) = shop.events("ann", "ReferralVoided")
    assert voided["data"]["cause"] == "claim-C-1"
    assert voided["data"]["refund_id"] == claimed["data"]["refund_id"]
    assert made(shop, "ann")["bob"]["state"] == "voided"
    assert (shop.points("ann")["pending"], shop.points("bob")["pending"]) == (0, 0)


def test_a_capped_referral_names_the_purchase_in_both_ledgers(shop: Shop, ann: str) -> None:
    publish_referral_terms(shop.ledger, cap=1)
    refer(shop, "bob", ann)
    refer(shop, "carol", ann)
    answers(shop.ledger).record_purchase(
        "B-1", "bob", Decimal("50.00"), "USD", None, [], None, "buy-B-1"
    )
    answers(shop.ledger).record_purchase(
        "C-1", "carol", Decimal("50.00"), "USD", None, [], None, "buy-C-1"
    )
    (capped,) = shop.events("ann", "ReferralCapped")
    assert (capped["data"]["cause"], capped["data"]["referee_id"]) == ("buy-C-1", "carol")
    assert capped["data"]["order_id"] == "C-1"
    (theirs,) = shop.events("carol", "RefereeReferralCapped")
    assert (theirs["data"]["cause"], theirs["data"]["order_id"]) == ("buy-C-1", "C-1")
    assert shop.events("carol", "RefereeRewardPending") == []
    referral = made(shop, "ann")["carol"]
    assert (referral["state"], referral["causes"]["capped"]) == ("capped", "buy-C-1")
    assert (referral["referrer_points"], referral["referee_points"]) == (0, 0)
    assert (shop.points("ann")["pending"], shop.points("carol")["pending"]) == (500, 50)
    # A capped referral is final: carol's next purchase changes nothing.
    shop.buy("C-2", "100.00", "carol")
    assert made(shop, "ann")["carol"]["state"] == "capped"
    assert shop.points("ann")["pending"] == 500


# The cap: rewards in the trailing 365 days.


def test_the_cap_counts_rewards_of_the_trailing_365_days(shop: Shop, ann: str) -> None:
    publish_referral_terms(shop.ledger, cap=1)
    for friend in ("f1", "f2", "f3"):
        refer(shop, friend, ann)
    shop.buy("F-1", "50.00", "f1")
    shop.at(364.99).buy("F-2", "50.00", "f2")
    shop.at(365).buy("F-3", "50.00", "f3")
    states = {friend: r["state"] for friend, r in made(shop, "ann").items()}
    assert states == {"f1": "rewarded", "f2": "capped", "f3": "qualified"}
    assert shop.points("ann") | {"available": 500, "pending": 500} == shop.points("ann")


def test_a_voided_referral_frees_its_place_under_the_cap(shop: Shop, ann: str) -> None:
    publish_referral_terms(shop.ledger, cap=2)
    for friend in ("f1", "f2", "f3", "f4"):
        refer(shop, friend, ann)
    shop.buy("F-1", "50.00", "f1")
    shop.buy("F-2", "50.00", "f2")
    shop.buy("F-3", "50.00", "f3")
    shop.at(1).refund("F-1", "RF-1")
    shop.buy("F-4", "50.00", "f4")
    states = {friend: r["state"] for friend, r in made(shop, "ann").items()}
    assert states == {"f1": "voided", "f2": "qualified", "f3": "capped", "f4": "qualified"}
    assert shop.points("ann")["pending"] == 2 * 500


def test_a_referral_keeps_the_terms_it_was_registered_under(shop: Shop, ann: str) -> None:
    refer(shop, "bob", ann)
    publish_referral_terms(
        shop.ledger, referrer_points=1000, referee_points=400, qualifying_amount=Decimal("100")
    )
    refer(shop, "carol", ann)
    shop.buy("B-1", "60.00", "bob")
    shop.buy("C-1", "60.00", "carol")
    assert {f: r["state"] for f, r in made(shop, "ann").items()} == {
        "bob": "qualified",
        "carol": "registered",
    }
    shop.buy("C-2", "100.00", "carol")
    referrals = made(shop, "ann")
    assert (referrals["bob"]["referrer_points"], referrals["bob"]["referee_points"]) == (500, 250)
    assert (referrals["carol"]["referrer_points"], referrals["carol"]["referee_points"]) == (
        1000,
        400,
    )
    assert shop.points("ann")["pending"] == 1500
    assert shop.points("bob")["pending"] == 60 + 250
    assert shop.points("carol")["pending"] == 60 + 100 + 400


# The books after voiding.


def reward_lot(ledger: Ledger, member_id: str, source: str) -> dict[str, Any]:
    member: Member = ledger.repository.get(member_uuid(member_id))
    lot = member.lots.lots[source]
    return {"remaining": lot.remaining, "points": lot.points}


def test_voiding_keeps_both_books_balanced_when_other_clawbacks_ate_into_the_reward_lots(
    shop: Shop, ann: str
) -> None:
    refer(shop, "bob", ann)
    shop.buy("A-0", "100.00", "ann")
    # bob's first purchase qualifies; its 90-day guarantee keeps both rewards pending till day 90
    shop.buy("B-1", "60.00", "bob", guarantee="trial-90")
    shop.at(1).buy("B-2", "200.00", "bob")
    shop.at(31)
    shop.redeem("R-A", 100, member_id="ann")
    shop.redeem("R-B", 200, member_id="bob")
    assert shop.points("ann") | {"available": 0, "pending": 500} == shop.points("ann")
    assert shop.points("bob") | {"available": 0, "pending": 310} == shop.points("bob")

    # Refunds of spent purchases take from the oldest other lots: the pending rewards.
    shop.at(32)
    assert shop.refund("A-0", "RF-A")["points_clawed_back"] == 100
    assert shop.refund("B-2", "RF-B")["points_clawed_back"] == 200
    ann_lot = reward_lot(shop.ledger, "ann", "referral:bob")
    bob_lot = reward_lot(shop.ledger, "bob", "referred-by:ann")
    assert (ann_lot["remaining"], bob_lot["remaining"]) == (400, 110)
    assert shop.points("ann")["pending"] == 400
    # B-1's 60 went to the clawback of B-2 along with 140 of the 250
    assert shop.points("bob")["pending"] == 110

    # B-1 refunded in full inside its window: the referral is voided and both rewards go.
    shop.at(40)
    assert shop.refund("B-1", "RF-1")["points_clawed_back"] == 60
    assert made(shop, "ann")["bob"]["state"] == "voided"
    ann_points, bob_points = shop.points("ann"), shop.points("bob")
    # ann: earned 100 + 500, clawed back 100 + 500, redeemed 100
    assert ann_points | {
        "available": -100, "pending": 0, "lifetime_earned": 600, "clawed_back": 600,
        "redeemed": 100,
    } == ann_points  # fmt: skip
    # bob: earned 60 + 200 + 250, clawed back 200 + 60 + 250, redeemed 200
    assert bob_points | {
        "available": -200, "pending": 0, "lifetime_earned": 510, "clawed_back": 510,
        "redeemed": 200,
    } == bob_points  # fmt: skip
    assert books_balance(ann_points) and books_balance(bob_points)

    # The debt is repaid by the next lot to become available.
    shop.buy("B-3", "300.00", "bob")
    shop.at(70)
    assert shop.points("bob") | {"available": 100, "pending": 0} == shop.points("bob")
    assert books_balance(shop.points("bob"))


@pytest.mark.parametrize(
    ("refunded", "voided"), [("60.00", True), ("10.01", True), ("10.00", False)]
)
def test_books_balance_after_a_refund_of_the_qualifying_purchase(
    shop: Shop, ann: str, refunded: str, voided: bool
) -> None:
    refer(shop, "bob", ann)
    shop.buy("B-1", "60.00", "bob")
    shop.at(29.99).refund("B-1", "RF-1", refunded)
    assert made(shop, "ann")["bob"]["state"] == ("voided" if voided else "qualified")
    for member_id in ("ann", "bob"):
        assert books_balance(shop.points(member_id))
    assert shop.points("ann")["pending"] == (0 if voided else 500)
    shop.at(30)
    assert made(shop, "ann")["bob"]["state"] == ("voided" if voided else "rewarded")
    for member_id in ("ann", "bob"):
        assert books_balance(shop.points(member_id))


# Replaying the store.


def replay(events: list[Any]) -> Member:
    """The member from its stored events alone, with no snapshot and no cache."""
    member: Member = functools.reduce(lambda m, e: e.mutate(m), events, None)
    return member


def ledger_facts(member: Member) -> dict[str, Any]:
    """What a member's ledger holds, leaving out indexes kept only to make reads fast."""
    return {
        "referral": member.referral,
        "referrals": member.referrals,
        "referral_order": member.referral_order,
        "qualified_referrals": member.qualified_referrals,
        "lots": member.lots.lots,
        "open_lots": member.lots.open,
        "purchases": member.purchases,
        "totals": (
            member.lifetime_earned, member.clawed_back, member.redeemed, member.expired,
            member.lots.debt,
        ),
        "business_time": member.business_time,
    }  # fmt: skip


def test_replaying_the_store_gives_the_same_members_statuses_and_referrals() -> None:
    clock = FixedClock(START)
    # Cache on and a snapshot every 4 events, as a long-running server would have them.
    ledger = Ledger(
        env={**IN_MEMORY, "AGGREGATE_CACHE_MAXSIZE": "100"},
        clock=clock,
        snapshot_interval=4,
        sealer=Vault.in_memory(),
    )
    shop = Shop(ledger, clock)
    shop.enrol("ann")
    ledger.publish_program(replace(ProgramRules(), referrals=ReferralTerms(cap=2)), "a tighter cap")
    code = code_of(shop, "ann")
    for friend in ("f1", "f2", "f3", "f4"):
        refer(shop, friend, code)
    shop.buy("F-1", "80.00", "f1")
    shop.at(1).buy("F-2", "50.00", "f2")
    shop.at(2).refund("F-2", "RF-2", "0.01")  # voided: 49.99 left
    shop.at(3).buy("F-3", "200.00", "f3")
    shop.at(4).buy("F-4", "50.00", "f4")  # capped: f1 and f3 hold the two places
    shop.at(40)
    ledger.record_due()
    shop.at(41).refund("F-1", "RF-1")  # after the window: f1's reward stands
    states = {friend: r["state"] for friend, r in made(shop, "ann").items()}
    assert states == {"f1": "rewarded", "f2": "voided", "f3": "rewarded", "f4": "capped"}

    for member_id in ("ann", "f1", "f2", "f3", "f4"):
        uid = member_uuid(member_id)
        live: Member = ledger.repository.get(uid)
        events = list(ledger.events.get(uid))
        from_events = replay(events)
        from_snapshot: Member = ledger.repository.get(uid, version=live.version)
        assert from_events.version == live.version == len(events)
        for replayed in (from_events, from_snapshot):
            assert ledger_facts(replayed) == ledger_facts(live)
        status = answers(ledger).member_status(member_id)
        replayed = representations.status(from_events.status(clock.now(), ledger.terms()))
        assert representations.opened(replayed, ledger.sealer) == status
        assert books_balance(status["points"])
        for moment in (day(0.5), day(2.5), day(35)):
            past = answers(ledger).member_status(member_id, as_of=moment)
            assert books_balance(past["points"])

    ann = replay(list(ledger.events.get(member_uuid("ann"))))
    friends = [ann.referrals[f] for f in ann.referral_order]
    assert representations.referrals("ann", friends) == answers(ledger).referrals("ann")
    # ann: f1's and f3's 500 each; f2's was voided, f4 was capped
    assert shop.points("ann") | {"available": 1000, "pending": 0, "clawed_back": 500} == (
        shop.points("ann")
    )


def test_the_referrals_list_pages_in_enrolment_order(shop: Shop, ann: str) -> None:
    friends = [f"f{n:02d}" for n in range(7)]
    for friend in friends:
        refer(shop, friend, ann)
    pages = [answers(shop.ledger).referrals("ann", after=after, limit=3) for after in (0, 3, 6, 9)]
    assert [[r["referee_id"] for r in page] for page in pages] == [
        friends[:3],
        friends[3:6],
        friends[6:],
        [],
    ]
    assert [r["seq"] for page in pages for r in page] == list(range(1, 8))


def test_a_referee_reward_is_pending_like_the_purchase_that_earned_it(shop: Shop, ann: str) -> None:
    refer(shop, "bob", ann)
    shop.buy("B-1", "60.00", "bob", guarantee="trial-90")
    lots = shop.points("bob")["pending_lots"]
    assert lots == [
        {"points": 60, "available_at": iso(90)},
        {"points": 250, "available_at": iso(90)},
    ]
    assert shop.points("ann")["pending_lots"] == [{"points": 500, "available_at": iso(90)}]
    shop.at(89.99)
    assert made(shop, "ann")["bob"]["state"] == "qualified"
    assert shop.points("ann")["available"] == 0
    shop.at(90)
    assert made(shop, "ann")["bob"]["state"] == "rewarded"
    assert (shop.points("ann")["available"], shop.points("bob")["available"]) == (500, 310)


def test_an_enrolment_that_fails_to_save_leaves_no_referral_behind(
    clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the cache on, the referrer is changed in place before the save.
    ledger = Ledger(
        env={**IN_MEMORY, "AGGREGATE_CACHE_MAXSIZE": "100"}, clock=clock, sealer=Vault.in_memory()
    )
    shop = Shop(ledger, clock)
    answers(ledger).enrol("ann", "ann@example.com", None, "t")
    code = code_of(shop, "ann")

    def database_gone(*_: Any) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(ledger, "save", database_gone)
    with pytest.raises(ConnectionError):
        answers(ledger).enrol("bob", "bob@example.com", None, "t", referral_code=code)
    monkeypatch.undo()
    assert made(shop, "ann") == {}
    refer(shop, "carol", code)
    assert list(made(shop, "ann")) == ["carol"]
    stored = [e["type"] for e in shop.events("ann")]
    assert stored == ["Enrolled", "ReferralRegistered"]
    assert [e["data"]["referee_id"] for e in shop.events("ann", "ReferralRegistered")] == ["carol"]
