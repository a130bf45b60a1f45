"""The key store on both databases: ids, older tables, revocation across caches, last use."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.keys import (
    KeyNotRotatable,
    KeyStore,
    LastAdminKey,
    MemberTokenClaims,
    UnknownKey,
    mint_member_token,
    read_member_token,
)
from adapters.settings import Database
from adapters.sidetables import connect
from domain.clock import FixedClock

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
# The table as the first version created it, and one of its rows.
FIRST_VERSION = (
    "CREATE TABLE daifuku_api_keys (key_hash text PRIMARY KEY, role text NOT NULL,"
    " name text NOT NULL, created_at text NOT NULL)"
)
OLD_KEY = "dfk_a-key-made-by-the-first-version"
OLD_HASH = hashlib.sha256(OLD_KEY.encode()).hexdigest()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def stores(database_url: str, clock: FixedClock) -> Iterator[list[KeyStore]]:
    """Key stores as separate server processes have them: each with its own cache."""
    opened: list[KeyStore] = []
    yield opened
    for store in opened:
        store.close()


def open_store(database_url: str, clock: FixedClock, opened: list[KeyStore]) -> KeyStore:
    store = KeyStore(Database.from_url(database_url), clock=clock)
    opened.append(store)
    return store


def make_first_version_table(database_url: str) -> None:
    db = connect(Database.from_url(database_url))
    try:
        db.run(FIRST_VERSION)
        db.run(
            "INSERT INTO daifuku_api_keys (key_hash, role, name, created_at) VALUES (?, ?, ?, ?)",
            (OLD_HASH, "admin", "old admin", "2026-01-05T09:00:00.123456+00:00"),
        )
    finally:
        db.close()


def counting(store: KeyStore) -> list[str]:
    """The statements the store sends from now on."""
    sent: list[str] = []
    run = store._db.run

    def spy(statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        sent.append(statement)
        return run(statement, params)

    store._db.run = spy  # type: ignore[method-assign]
    return sent


def test_a_new_key_has_a_public_id_and_only_its_hash_is_stored(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    store = open_store(database_url, clock, stores)
    key, secret = store.issue("auditor", "ops", START + timedelta(days=30))
    assert key.key_id.startswith("key_") and len(key.key_id) == 16
    assert (key.name, key.role, key.created_at) == ("ops", "auditor", START)
    assert (key.expires_at, key.last_used_at, key.revoked_at) == (
        START + timedelta(days=30),
        None,
        None,
    )
    assert store.find(secret) == key
    rows = store._db.run("SELECT * FROM daifuku_api_keys")
    assert all(secret not in str(row) for row in rows)
    assert key.key_id not in secret


def test_a_table_of_the_first_version_gains_the_new_columns_and_its_keys_keep_working(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    make_first_version_table(database_url)
    # Several workers start at once on the old table: every one of them comes up.
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_store(database_url, clock, stores)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = stores[0]
    old = store.find(OLD_KEY)
    assert old is not None
    assert old.key_id == "key_" + OLD_HASH[:12]
    assert (old.role, old.name, old.expires_at, old.revoked_at) == (
        "admin",
        "old admin",
        None,
        None,
    )
    assert store.role_of(OLD_KEY) == ("admin", "old admin")
    assert [key.key_id for key in store.page()] == [old.key_id]
    store.create("admin", "new admin")
    assert store.revoke(old.key_id).revoked_at == START
    assert store.role_of(OLD_KEY) is None


def test_a_revocation_is_seen_by_another_process_within_a_second(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    here = open_store(database_url, clock, stores)
    there = open_store(database_url, clock, stores)
    key, secret = here.issue("storefront", "web shop")
    assert there.role_of(secret) == ("storefront", "web shop")
    sent = counting(there)
    for _ in range(200):
        assert there.role_of(secret) is not None
    assert len(sent) <= 2, sent  # the cache answers; at most a look at the generation
    revoked_at = time.monotonic()
    here.revoke(key.key_id)
    while there.role_of(secret) is not None:
        assert time.monotonic() - revoked_at < 1.0, "still accepted a second after revocation"
        time.sleep(0.01)
    assert here.role_of(secret) is None  # at once in the process that revoked it


def test_an_expired_key_stops_working_at_its_expiry(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    store = open_store(database_url, clock, stores)
    key, secret = store.issue("storefront", "campaign", START + timedelta(hours=1))
    assert store.role_of(secret) == ("storefront", "campaign")
    clock.advance(timedelta(hours=1))
    assert store.role_of(secret) is None
    assert store.get(key.key_id).state(clock.now()) == "expired"
    with pytest.raises(ValueError, match="future"):
        store.issue("storefront", "late", START)


def test_last_use_is_written_at_most_once_a_minute(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    store = open_store(database_url, clock, stores)
    key, _ = store.issue("storefront", "web shop")
    sent = counting(store)
    for _ in range(5):
        store.record_use(key)
    assert len([s for s in sent if "last_used_at" in s]) == 1
    assert store.get(key.key_id).last_used_at == START
    clock.advance(timedelta(seconds=59))
    store.record_use(key)
    assert store.get(key.key_id).last_used_at == START
    clock.advance(timedelta(seconds=1))
    store.record_use(key)
    assert store.get(key.key_id).last_used_at == START + timedelta(seconds=60)


def test_revoking_is_idempotent_and_unknown_ids_are_refused(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    store = open_store(database_url, clock, stores)
    key, _ = store.issue("auditor", "ops")
    first = store.revoke(key.key_id)
    clock.advance(timedelta(minutes=5))
    assert store.revoke(key.key_id) == first
    assert first.revoked_at == START
    with pytest.raises(UnknownKey):
        store.revoke("key_000000000000")
    with pytest.raises(KeyNotRotatable):
        store.rotate(key.key_id)


def test_the_last_admin_key_that_works_is_kept_even_when_two_are_revoked_at_once(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    first, second = open_store(database_url, clock, stores), open_store(database_url, clock, stores)
    a, _ = first.issue("admin", "a")
    b, _ = first.issue("admin", "b")
    expired, _ = first.issue("admin", "expired", START + timedelta(minutes=1))
    clock.advance(timedelta(minutes=1))
    outcomes: list[str] = []

    def revoke(store: KeyStore, key_id: str) -> None:
        try:
            store.revoke(key_id)
            outcomes.append("revoked")
        except LastAdminKey:
            outcomes.append("kept")

    threads = [
        threading.Thread(target=revoke, args=(first, a.key_id)),
        threading.Thread(target=revoke, args=(second, b.key_id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["kept", "revoked"]
    assert first.revoke(expired.key_id).revoked_at is not None  # it works no more anyway


def test_rotating_keeps_name_role_and_expiry_and_revokes_the_old_key(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    store = open_store(database_url, clock, stores)
    old, old_secret = store.issue("admin", "only admin", START + timedelta(days=90))
    new, secret, revoked = store.rotate(old.key_id)  # the only admin key: rotated, not kept
    assert (new.name, new.role, new.expires_at) == (old.name, old.role, old.expires_at)
    assert new.key_id != old.key_id and secret != old_secret
    assert revoked.revoked_at == START
    assert store.role_of(old_secret) is None
    assert store.role_of(secret) == ("admin", "only admin")


def test_member_tokens_issued_before_a_revocation_are_refused_everywhere_within_a_second(
    database_url: str, clock: FixedClock, stores: list[KeyStore]
) -> None:
    here = open_store(database_url, clock, stores)
    there = open_store(database_url, clock, stores)
    secret = b"signing secret"
    expires = START + timedelta(hours=1)
    before = read_member_token(
        secret, mint_member_token(secret, "ann", expires, issued_at=START), START
    )
    assert before is not None and not there.refuses(before)
    legacy = MemberTokenClaims("ann", None, int(expires.timestamp()))
    assert not there.refuses(legacy)
    revoked_at = time.monotonic()
    at = START + timedelta(seconds=1, microseconds=1500)
    assert here.revoke_member_tokens("ann", at) == START + timedelta(seconds=1, milliseconds=1)
    while not there.refuses(before):
        assert time.monotonic() - revoked_at < 1.0, "still accepted a second after revocation"
        time.sleep(0.01)
    assert there.refuses(legacy)  # a dmt1 token does not say when it was issued
    after = read_member_token(
        secret, mint_member_token(secret, "ann", expires, issued_at=at), START
    )
    assert after is not None and not there.refuses(after)
    bob = read_member_token(
        secret, mint_member_token(secret, "bob", expires, issued_at=START), START
    )
    assert bob is not None and not there.refuses(bob)
    # An earlier instant never takes a revocation back.
    assert here.revoke_member_tokens("ann", START) == START + timedelta(seconds=1, milliseconds=1)
