"""Personal data at rest, on both stores: no email or name in plain text anywhere in the
database (events, snapshots, read models, keys), and after an erasure no way back to them,
master key or not, while the ledger, its export and its replay stay whole."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.export import export_lines, verify_lines
from adapters.projections import MemberStatusProjection, ProjectionWorker
from adapters.settings import Database, Settings
from adapters.vault import Vault
from adapters.verification import verify_member_status
from adapters.views import MemberStatusView, open_member_status_view
from api import representations
from api.bootstrap import bootstrap
from domain.errors import SelfReferral
from domain.ledger import Ledger
from domain.members import Member, member_uuid
from tests.answers import answers
from tests.plaintext import plain_hits

PEOPLE = {
    "ann": ("ann.zephyrine@example.com", "Ann Zephyrine"),
    "bob": ("bob.quillfeather@example.org", "Bob Quillfeather"),
    "cat": ("cat.marchbanks@example.net", None),
}
SECRETS = [text for email, name in PEOPLE.values() for text in (email, name) if text]


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[Ledger, MemberStatusView, str]]:
    settings = Settings.from_environ(
        {"DAIFUKU_DATABASE_URL": database_url, "DAIFUKU_SNAPSHOT_INTERVAL": "2"}
    )
    ledger, keys, _ = bootstrap(settings)
    view = open_member_status_view(ledger.env)
    try:
        yield ledger, view, database_url
    finally:
        view.close()
        ledger.close()
        keys.close()


def populate(ledger: Ledger) -> None:
    shop = answers(ledger)
    for member_id, (email, name) in PEOPLE.items():
        shop.enrol(member_id, email, name, "enrol")
    for n in range(5):  # enough events for snapshots at interval 2
        shop.record_purchase(f"A-{n}", "ann", Decimal("40.00"), "USD", None, None, None, "buy")
    shop.record_purchase("B-1", "bob", Decimal("10.00"), "USD", None, None, None, "buy")


def project(ledger: Ledger, view: MemberStatusView) -> None:
    ProjectionWorker(ledger, MemberStatusProjection(view, ledger, representations)).catch_up()


def export(ledger: Ledger) -> list[str]:
    return list(export_lines(ledger.event_log, datetime.now(UTC)))


def test_no_email_or_name_is_stored_in_plain_text_anywhere(
    store: tuple[Ledger, MemberStatusView, str],
) -> None:
    ledger, view, url = store
    populate(ledger)
    project(ledger, view)
    lines = export(ledger)
    snapshots = ledger.snapshots
    assert snapshots is not None and list(snapshots.get(member_uuid("ann")))
    assert view.row("ann") is not None
    assert plain_hits(url, SECRETS) == []
    assert not [s for s in SECRETS for line in lines if s.lower() in line.lower()]
    # ... and yet every read opens them.
    assert answers(ledger).member_status("ann")["email"] == "ann.zephyrine@example.com"
    assert answers(ledger).member_status("ann")["name"] == "Ann Zephyrine"


def test_an_erasure_leaves_no_way_back_to_the_email_and_name(
    store: tuple[Ledger, MemberStatusView, str],
) -> None:
    ledger, view, url = store
    populate(ledger)
    project(ledger, view)
    before = export(ledger)
    sealed = sealed_email(ledger, "ann")
    assert ledger.sealer.open("ann", "email", sealed) == "ann.zephyrine@example.com"

    receipt = ledger.erase_personal_data("ann", "erase")
    assert receipt.created and receipt.value.erased == ["email", "name"]
    again = ledger.erase_personal_data("ann", "erase-again")
    assert not again.created and again.value == receipt.value

    # The master key opens nothing: a vault opened afresh on the database has no key for ann.
    fresh = Vault.open_database(Database.from_url(url), None)
    try:
        assert fresh.open("ann", "email", sealed) is None
        assert (
            fresh.open("bob", "email", sealed_email(ledger, "bob"))
            == "bob.quillfeather@example.org"
        )
    finally:
        fresh.close()
    status = answers(ledger).member_status("ann")
    assert (status["email"], status["name"], status["personal_data"]) == (None, None, "erased")
    assert status["points"]["lifetime_earned"] > 0 and status["stage"] == "repeat"
    project(ledger, view)
    row = view.row("ann")
    assert row is not None and row.status["personal"] == {
        "email": None,
        "name": None,
        "state": "erased",
    }
    # The ledger, its export and its replay are whole.
    after = export(ledger)
    assert verify_lines(before).ok and verify_lines(after).ok
    assert after[: len(before) - 1] == before[:-1]  # the same lines, then the erasure
    assert verify_member_status(ledger, view, representations).mismatches == []
    # The erased email is free for a new member.
    answers(ledger).enrol("ann-2", "ann.zephyrine@example.com", "Ann Zephyrine", "enrol")
    assert answers(ledger).member_status("ann-2")["email"] == "ann.zephyrine@example.com"


def sealed_email(ledger: Ledger, member_id: str) -> str:
    events = ledger.events.get(member_uuid(member_id))
    enrolled = next(e for e in events if isinstance(e, Member.Enrolled))
    assert enrolled.sealed_email is not None
    return str(enrolled.sealed_email)


def test_self_referral_is_found_by_the_keyed_digest(
    store: tuple[Ledger, MemberStatusView, str],
) -> None:
    ledger, _, _ = store
    shop = answers(ledger)
    shop.enrol("ann", "Ann+shop@Example.com", None, "enrol")
    code = shop.member_status("ann")["referral_code"]
    with pytest.raises(SelfReferral):
        shop.enrol("ann-alt", "ann@example.com", None, "enrol", referral_code=code)
    shop.enrol("dan", "dan@example.com", None, "enrol", referral_code=code)
    ledger.erase_personal_data("ann", "erase")
    # An erased referrer's digest can be checked by nobody: the same email is a stranger now.
    shop.enrol("ann-new", "ann@example.com", None, "enrol", referral_code=code)
    assert [r.referee_id for r in ledger.referrals("ann")] == ["dan", "ann-new"]


def test_when_an_erasure_returns_no_other_process_opens_the_data(database_url: str) -> None:
    database = Database.from_url(database_url)
    here, there = (Vault.open_database(database, None) for _ in range(2))
    try:
        sealed = here.seal("ann", "email", "ann.zephyrine@example.com")
        assert there.open("ann", "email", sealed) == "ann.zephyrine@example.com"  # cached there
        assert here.erase("ann")
        assert there.open("ann", "email", sealed) is None
    finally:
        here.close()
        there.close()
