"""The personal-data vault: a data key per member, wrapped by the master key (crypto-shredding).

Email and name are sealed with AES-GCM under their member's own data key, the member id bound
in as associated data; the data keys live in their own table (``daifuku_data_keys``), each
wrapped with AES-GCM by the master key (``DAIFUKU_MASTER_KEY``, or one generated on first start
and kept in ``daifuku_secrets``). Erasing a member deletes its data key: the sealed values the
ledger keeps can then be opened by nobody, master key or not.

Unwrapped data keys are kept in memory (never the plain values), so that a read opens a
member's data without a query. Every erasure bumps a generation counter in the database in the
same transaction as the deletion; each process looks at the counter at most every
``POLL_SECONDS`` and forgets every key it holds when the counter has moved, and an erasure
returns only after ``ERASE_WAIT_SECONDS``, by when every process has looked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from datetime import UTC, datetime
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.followed import FollowedCache
from adapters.settings import ConfigurationError, Database
from adapters.sidetables import Connection, connect

SEALED_PREFIX = "pd1:"
MASTER_KEY_NAME = "personal-data-master-key"
MASTER_CHECK_NAME = "personal-data-master-key-check"
POLL_SECONDS = 0.5
ERASE_WAIT_SECONDS = 2 * POLL_SECONDS
CACHE_SIZE = 100_000  # 32-byte keys: a few MB
NONCE_BYTES = 12

SCHEMA_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS daifuku_data_keys ("
    " member_id text PRIMARY KEY, wrapped text NOT NULL, created_at text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_secrets (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_erasures ("
    " singleton integer PRIMARY KEY, generation bigint NOT NULL)",
    "INSERT INTO daifuku_erasures (singleton, generation) VALUES (1, 0) ON CONFLICT DO NOTHING",
)
SELECT_GENERATION = "SELECT generation FROM daifuku_erasures WHERE singleton = 1"
BUMP_GENERATION = "UPDATE daifuku_erasures SET generation = generation + 1 WHERE singleton = 1"
SELECT_KEY = "SELECT wrapped FROM daifuku_data_keys WHERE member_id = ?"
INSERT_KEY = (
    "INSERT INTO daifuku_data_keys (member_id, wrapped, created_at) VALUES (?, ?, ?)"
    " ON CONFLICT DO NOTHING RETURNING wrapped"
)
INSERT_KEYS = (
    "INSERT INTO daifuku_data_keys (member_id, wrapped, created_at) VALUES {values}"
    " ON CONFLICT DO NOTHING RETURNING member_id, wrapped"
)
DELETE_KEY = "DELETE FROM daifuku_data_keys WHERE member_id = ? RETURNING member_id"
INSERT_SECRET = "INSERT INTO daifuku_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
SELECT_SECRET = "SELECT value FROM daifuku_secrets WHERE name = ?"


class DataKeys(Protocol):
    """Where wrapped data keys are kept, by member id."""

    def get(self, member_id: str) -> str | None: ...

    def add(self, member_id: str, wrapped: str) -> str:
        """Keep ``wrapped`` unless the member has a key already; the one kept."""
        ...

    def add_many(self, wrapped: dict[str, str]) -> dict[str, str]:
        """``add`` for many members at once (one transaction); the keys kept, by member."""
        ...

    def delete(self, member_id: str) -> bool:
        """Delete the member's key and move the erasure generation on, together."""
        ...

    def generation(self) -> int:
        """How many erasures there have been (any change means: forget cached keys)."""
        ...

    def close(self) -> None: ...


class MemoryDataKeys:
    """Data keys of an in-memory ledger (tests, the in-memory store)."""

    def __init__(self) -> None:
        self.wrapped: dict[str, str] = {}
        self.erasures = 0
        self._lock = threading.Lock()

    def get(self, member_id: str) -> str | None:
        return self.wrapped.get(member_id)

    def add(self, member_id: str, wrapped: str) -> str:
        with self._lock:
            return self.wrapped.setdefault(member_id, wrapped)

    def add_many(self, wrapped: dict[str, str]) -> dict[str, str]:
        with self._lock:
            return {member: self.wrapped.setdefault(member, key) for member, key in wrapped.items()}

    def delete(self, member_id: str) -> bool:
        with self._lock:
            deleted = self.wrapped.pop(member_id, None) is not None
            self.erasures += deleted
            return deleted

    def generation(self) -> int:
        return self.erasures

    def close(self) -> None:
        pass


class TableDataKeys:
    """Data keys in ``daifuku_data_keys``, in the ledger's own database."""

    def __init__(self, database: Database) -> None:
        self._db: Connection = connect(database, name="daifuku-vault")
        self._db.create_tables(SCHEMA_STATEMENTS)
        self._sqlite = database.kind == "sqlite"
        if self._sqlite:
            # A deleted data key is overwritten, not left in the file's free pages.
            self._db.run("PRAGMA secure_delete = ON")

    def get(self, member_id: str) -> str | None:
        rows = self._db.run(SELECT_KEY, (member_id,))
        return str(rows[0][0]) if rows else None

    def add(self, member_id: str, wrapped: str) -> str:
        """One round trip for a new member; a second when it had a key already."""
        added = self._db.run(INSERT_KEY, (member_id, wrapped, datetime.now(UTC).isoformat()))
        if added:
            return str(added[0][0])
        kept = self.get(member_id)
        assert kept is not None, f"the data key of {member_id!r} was deleted while kept"
        return kept

    def add_many(self, wrapped: dict[str, str]) -> dict[str, str]:
        """One multi-row INSERT; a SELECT for the members that had a key already."""
        if not wrapped:
            return {}
        made = datetime.now(UTC).isoformat()
        values = ", ".join("(?, ?, ?)" for _ in wrapped)
        params = [p for member, key in wrapped.items() for p in (member, key, made)]
        rows = self._db.run(INSERT_KEYS.format(values=values), params)
        kept = {str(member): str(key) for member, key in rows}
        for member in wrapped.keys() - kept.keys():
            found = self.get(member)
            assert found is not None, f"the data key of {member!r} was deleted while kept"
            kept[member] = found
        return kept

    def delete(self, member_id: str) -> bool:
        deleted = bool(
            self._db.run_together([(DELETE_KEY, (member_id,)), (BUMP_GENERATION, ())])[0]
        )
        if deleted and self._sqlite:
            # The write-ahead log still holds the page with the key: move it into the file
            # (where secure_delete has zeroed it) and empty the log. Best effort: a busy
            # reader leaves it to SQLite's next checkpoint.
            self._db.run("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def generation(self) -> int:
        return int(self._db.run(SELECT_GENERATION)[0][0])

    def secret(self, name: str, default: str) -> str:
        """The secret kept under ``name``, set to ``default`` if there was none."""
        self._db.run(INSERT_SECRET, (name, default))
        return str(self._db.run(SELECT_SECRET, (name,))[0][0])

    def store_together(self, secrets: dict[str, str]) -> None:
        """Keep each secret that is not kept yet, all in one transaction."""
        self._db.run_together([(INSERT_SECRET, (name, value)) for name, value in secrets.items()])

    def stored(self, name: str) -> str | None:
        rows = self._db.run(SELECT_SECRET, (name,))
        return str(rows[0][0]) if rows else None

    def flag(self, name: str) -> bool:
        return self.stored(f"flag:{name}") is not None

    def close(self) -> None:
        self._db.close()


class Vault:
    """Seals and opens a member's personal data, and destroys its key on erasure."""

    def __init__(self, keys: DataKeys, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ConfigurationError("the master key must be 32 bytes")
        self._keys = keys
        self._master = AESGCM(master_key)
        # Forgotten whenever a data key is destroyed anywhere (adapters/followed.py).
        self._cache: FollowedCache[str, bytes | None] = FollowedCache(
            keys.generation, CACHE_SIZE, POLL_SECONDS
        )

    @classmethod
    def in_memory(cls) -> Vault:
        return cls(MemoryDataKeys(), os.urandom(32))

    @classmethod
    def open_database(cls, database: Database, master_key: bytes | None) -> Vault:
        """The vault of a database: the given master key, or the one kept there; refuses a
        master key other than the one the database's data keys are wrapped with."""
        keys = TableDataKeys(database)
        try:
            if master_key is None:
                master_key = _kept_master_key(keys)
            if keys.secret(MASTER_CHECK_NAME, _check(master_key)) != _check(master_key):
                raise ConfigurationError(
                    "DAIFUKU_MASTER_KEY is not the master key this database's personal data "
                    "was sealed with; set the key it was started with"
                )
            return cls(keys, master_key)
        except BaseException:
            keys.close()
            raise

    def seal(self, member_id: str, field: str, text: str) -> str:
        """AES-GCM with a fresh 96-bit nonce; the member and the field are bound in, so a
        sealed value opens only as what it was sealed as."""
        key = self._data_key(member_id, create=True)
        assert key is not None
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, text.encode(), _seal_aad(member_id, field))
        return SEALED_PREFIX + _b64(nonce + sealed)

    def prepare(self, member_ids: list[str]) -> None:
        """Make the data keys of many new members at once (an import's batch): one round trip
        instead of one each; ``seal`` then finds them in memory."""

        def load_many(members: list[str]) -> dict[str, bytes | None]:
            made = {m: self._wrap(m, AESGCM.generate_key(bit_length=256)) for m in members}
            kept = self._keys.add_many(made)
            return {m: self._unwrap(m, wrapped) for m, wrapped in kept.items()}

        self._cache.get_many(member_ids, load_many)

    def open(self, member_id: str, field: str, sealed: str) -> str | None:
        key = self._data_key(member_id, create=False)
        if key is None:
            return None
        raw = _unb64(sealed.removeprefix(SEALED_PREFIX))
        return (
            AESGCM(key)
            .decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _seal_aad(member_id, field))
            .decode()
        )

    def digest(self, member_id: str, text: str) -> str | None:
        key = self._data_key(member_id, create=False)
        if key is None:
            return None
        digest_key = hmac.new(key, b"email digest", hashlib.sha256).digest()
        return hmac.new(digest_key, text.encode(), hashlib.sha256).hexdigest()

    def held(self, member_id: str) -> bool:
        return self._data_key(member_id, create=False) is not None

    def erase(self, member_id: str, wait: bool = True) -> bool:
        """Destroy the member's data key; False if there was none (erased before, or never).

        It returns once no process can hold the key in memory any more: every process looks at
        the erasure generation within ``POLL_SECONDS`` of a read, and this waits twice that
        (``wait=False``: at once, for a key whose holders stop using it anyway, such as a
        removed webhook subscription's)."""
        deleted = self._keys.delete(member_id)
        self._cache.forget(member_id)
        if deleted and wait:
            time.sleep(ERASE_WAIT_SECONDS)
        return deleted

    def flag(self, name: str) -> bool:
        """Whether a one-time step named ``name`` has been done in this database."""
        return isinstance(self._keys, TableDataKeys) and self._keys.flag(name)

    def set_flag(self, name: str) -> None:
        if isinstance(self._keys, TableDataKeys):
            self._keys.secret(f"flag:{name}", "done")

    def close(self) -> None:
        self._keys.close()

    def _data_key(self, member_id: str, create: bool) -> bytes | None:
        def load(member: str) -> bytes | None:
            if create:  # a new member's key, or the one it has (another process made it first)
                made = self._wrap(member, AESGCM.generate_key(bit_length=256))
                wrapped: str | None = self._keys.add(member, made)
            else:
                wrapped = self._keys.get(member)
            return None if wrapped is None else self._unwrap(member, wrapped)

        return self._cache.get(member_id, load, keep=lambda key: key is not None)

    def _wrap(self, member_id: str, key: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return _b64(nonce + self._master.encrypt(nonce, key, _wrap_aad(member_id)))

    def _unwrap(self, member_id: str, wrapped: str) -> bytes:
        raw = _unb64(wrapped)
        return self._master.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _wrap_aad(member_id))


def _kept_master_key(keys: TableDataKeys) -> bytes:
    """The master key kept in the database, generated (with its check, in one transaction) on
    the first start; a database whose data was sealed with a given key keeps none."""
    # The check first: the two are written together, so a check without a kept key was made
    # by a start with a given key (not by a start racing this one).
    checked = keys.stored(MASTER_CHECK_NAME) is not None
    kept = keys.stored(MASTER_KEY_NAME)
    if kept is not None:
        return _unb64(kept)
    if checked:
        raise ConfigurationError(
            "DAIFUKU_MASTER_KEY is not set, and this database's personal data was sealed with "
            "a master key it does not keep; set that key"
        )
    made = os.urandom(32)
    keys.store_together({MASTER_KEY_NAME: _b64(made), MASTER_CHECK_NAME: _check(made)})
    return _unb64(keys.secret(MASTER_KEY_NAME, _b64(made)))  # another start's, if it won


def _check(master_key: bytes) -> str:
    """What tells the master key apart without revealing it."""
    return _b64(hmac.new(master_key, b"daifuku master key", hashlib.sha256).digest())


def new_master_key() -> str:
    """A fresh master key as ``DAIFUKU_MASTER_KEY`` takes it."""
    return _b64(os.urandom(32))


def _seal_aad(member_id: str, field: str) -> bytes:
    return f"daifuku {field} of:{member_id}".encode()


def _wrap_aad(member_id: str) -> bytes:
    return b"daifuku data key:" + member_id.encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
