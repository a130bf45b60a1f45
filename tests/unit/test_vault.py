"""The vault: AES-GCM under a data key per member, wrapped by the master key."""

from __future__ import annotations

import time

import pytest
from cryptography.exceptions import InvalidTag

from adapters import vault as vaults
from adapters.vault import MemoryDataKeys, Vault


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vaults, "ERASE_WAIT_SECONDS", 0.0)


def test_a_sealed_value_opens_only_as_the_members_own_field() -> None:
    vault = Vault.in_memory()
    sealed = vault.seal("ann", "email", "ann@example.com")
    assert "ann@example.com" not in sealed and sealed.startswith("pd1:")
    assert vault.seal("ann", "email", "ann@example.com") != sealed, "a fresh nonce each time"
    assert vault.open("ann", "email", sealed) == "ann@example.com"
    with pytest.raises(InvalidTag):
        vault.open("ann", "name", sealed)  # swapped into the name: refused
    vault.seal("bob", "email", "bob@example.com")
    with pytest.raises(InvalidTag):
        vault.open("bob", "email", sealed)  # another member's key opens nothing


def test_data_keys_are_kept_wrapped_and_an_erasure_destroys_them() -> None:
    keys = MemoryDataKeys()
    master = b"m" * 32
    vault = Vault(keys, master)
    sealed = vault.seal("ann", "email", "ann@example.com")
    digest = vault.digest("ann", "ann@example.com")
    assert digest is not None and "ann" not in digest
    assert list(keys.wrapped) == ["ann"]
    assert Vault(keys, master).open("ann", "email", sealed) == "ann@example.com"
    with pytest.raises(InvalidTag):
        Vault(keys, b"x" * 32).open("ann", "email", sealed)  # wrapped: the master key opens it
    assert vault.erase("ann") and not vault.erase("ann")
    assert vault.open("ann", "email", sealed) is None
    assert vault.digest("ann", "ann@example.com") is None
    assert Vault(keys, master).open("ann", "email", sealed) is None


def test_another_process_forgets_an_erased_key_at_its_next_look_at_the_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vaults, "POLL_SECONDS", 0.05)
    keys = MemoryDataKeys()
    here, there = Vault(keys, b"m" * 32), Vault(keys, b"m" * 32)
    sealed = here.seal("ann", "email", "ann@example.com")
    here.seal("bob", "email", "bob@example.com")
    assert there.open("ann", "email", sealed) == "ann@example.com"  # now cached there
    lookups = []
    original = keys.get
    monkeypatch.setattr(
        keys, "get", lambda member_id: lookups.append(member_id) or original(member_id)
    )
    assert there.open("ann", "email", sealed) == "ann@example.com"
    assert lookups == [], "a cached key opens without a lookup"
    assert here.erase("ann")
    time.sleep(0.06)
    assert there.open("ann", "email", sealed) is None
