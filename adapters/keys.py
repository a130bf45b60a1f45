"""API keys (stored hashed) and member tokens (HMAC-signed, expiring), in the ledger's database.

Every server process caches what it looked up, and follows a generation counter that each
revocation bumps: a process looks at the counter at most every ``LOOK_SECONDS`` and forgets its
cache when the counter moved, so a revoked key or member token is refused by every process
within a second while the cache still answers nearly every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from adapters.followed import FollowedCache
from adapters.settings import Database
from adapters.sidetables import PING, Connection, connect
from domain.clock import Clock, SystemClock

KEY_ROLES = ("storefront", "auditor", "admin")
KEY_PREFIX = "dfk_"
KEY_ID_PREFIX = "key_"
KEY_ID_PATTERN = r"^key_[0-9a-f]{12}$"
LEGACY_MEMBER_TOKEN_PREFIX = "dmt1"
MEMBER_TOKEN_PREFIX = "dmt2"
MEMBER_TOKEN_PREFIXES = (LEGACY_MEMBER_TOKEN_PREFIX, MEMBER_TOKEN_PREFIX)
SECRET_NAME = "member-token-signing"
MAX_KEY_NAME = 100
# How often a process looks whether anything was revoked; with the time a request takes, a
# revocation is refused everywhere within a second.
LOOK_SECONDS = 0.5
# Forget everything now and then anyway: a row changed by hand in the database is seen too.
CACHE_MAX_SECONDS = 60.0
# last_used_at is approximate: written at most this often per key and process, never per request.
LAST_USED_EVERY = timedelta(seconds=60)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger(__name__)

KEYS_TABLE = "daifuku_api_keys"
# The table of the first version had only key_hash, role, name and created_at; the columns added
# since are added to an older table at start (ADDED_COLUMNS), so this statement keeps that shape.
SCHEMA_STATEMENTS = (
    f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("
    " key_hash text PRIMARY KEY, role text NOT NULL, name text NOT NULL, created_at text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_secrets (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_token_revocations ("
    " member_id text PRIMARY KEY, revoked_before text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_credential_generation ("
    " id integer PRIMARY KEY, generation bigint NOT NULL)",
)
ADDED_COLUMNS = ("key_id", "last_used_at", "expires_at", "revoked_at")
INDEX_STATEMENTS = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS daifuku_api_keys_key_id ON {KEYS_TABLE} (key_id)",
    "INSERT INTO daifuku_credential_generation (id, generation) VALUES (1, 0)"
    " ON CONFLICT DO NOTHING",
)
SQLITE_COLUMNS = f"PRAGMA table_info({KEYS_TABLE})"
POSTGRES_COLUMNS = (
    "SELECT column_name FROM information_schema.columns"
    f" WHERE table_name = '{KEYS_TABLE}' AND table_schema = current_schema()"
)
# A key of the first version gets an id derived from its hash, the same in every process.
DERIVED_ID = f"'{KEY_ID_PREFIX}' || substr(key_hash, 1, 12)"
COUNT_WITHOUT_ID = f"SELECT COUNT(*) FROM {KEYS_TABLE} WHERE key_id IS NULL"
GIVE_IDS = f"UPDATE {KEYS_TABLE} SET key_id = {DERIVED_ID} WHERE key_id IS NULL"

COLUMNS = (
    f"key_hash, COALESCE(key_id, {DERIVED_ID}), name, role, created_at, last_used_at,"
    " expires_at, revoked_at"
)
INSERT_KEY = (
    f"INSERT INTO {KEYS_TABLE} (key_hash, key_id, role, name, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_BY_HASH = f"SELECT {COLUMNS} FROM {KEYS_TABLE} WHERE key_hash = ?"
SELECT_BY_ID = f"SELECT {COLUMNS} FROM {KEYS_TABLE} WHERE COALESCE(key_id, {DERIVED_ID}) = ?"
SELECT_ALL = f"SELECT {COLUMNS} FROM {KEYS_TABLE}"
COUNT_KEYS = f"SELECT COUNT(*) FROM {KEYS_TABLE}"
NOTE_USE = f"UPDATE {KEYS_TABLE} SET last_used_at = ? WHERE key_hash = ?"
# Revoked unless it is the last admin key that still works: the shop would lock itself out.
REVOKE_KEY = (
    f"UPDATE {KEYS_TABLE} SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL"
    " AND (role <> 'admin' OR (expires_at IS NOT NULL AND expires_at <= ?) OR EXISTS ("
    f"  SELECT 1 FROM {KEYS_TABLE} other WHERE other.role = 'admin'"
    "  AND other.revoked_at IS NULL AND (other.expires_at IS NULL OR other.expires_at > ?)"
    "  AND other.key_hash <> ?))"
)
# Bumped first in a revocation's transaction: on PostgreSQL the row lock makes revocations take
# turns, so two admins revoking the last two admin keys at once cannot both succeed.
BUMP_GENERATION = (
    "UPDATE daifuku_credential_generation SET generation = generation + 1 WHERE id = 1"
)
SELECT_GENERATION = "SELECT generation FROM daifuku_credential_generation WHERE id = 1"
REVOKE_TOKENS = (
    "INSERT INTO daifuku_token_revocations (member_id, revoked_before) VALUES (?, ?)"
    " ON CONFLICT (member_id) DO UPDATE SET revoked_before = excluded.revoked_before"
    " WHERE excluded.revoked_before > daifuku_token_revocations.revoked_before"
)
SELECT_REVOCATION = "SELECT revoked_before FROM daifuku_token_revocations WHERE member_id = ?"
INSERT_SECRET = "INSERT INTO daifuku_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
SELECT_SECRET = "SELECT value FROM daifuku_secrets WHERE name = ?"


class UnknownKey(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key has the id {key_id!r}")
        self.key_id = key_id


class LastAdminKey(Exception):
    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"{key_id} is the last admin key that works: revoking it, the shop would lock "
            "itself out; create another admin key first"
        )
        self.key_id = key_id


class KeyNotRotatable(Exception):
    """Only a key that still works is rotated; a revoked or expired one is replaced by create."""


@dataclass(frozen=True)
class ApiKey:
    """What is known about a key; never its secret."""

    key_id: str
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    key_hash: str = field(repr=False, compare=False)

    def state(self, now: datetime) -> str:
        """active, expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class KeyStore:
    """Storefront, auditor and admin API keys (only the SHA-256 of a key is ever stored), and
    the instants before which a member's tokens are refused."""

    def __init__(
        self,
        database: Database,
        cache_size: int = 1024,
        clock: Clock | None = None,
        look_seconds: float = LOOK_SECONDS,
        members_cached: int = 65536,
    ) -> None:
        self.database = database
        self.clock: Clock = clock or SystemClock()
        self._db: Connection = connect(database, name="daifuku-keys")
        # Both forgotten whenever anything is revoked (adapters/followed.py).
        self._keys: FollowedCache[str, ApiKey | None] = FollowedCache(
            self._revocation_generation, cache_size, look_seconds, CACHE_MAX_SECONDS
        )
        self._revocations: FollowedCache[str, datetime | None] = FollowedCache(
            self._revocation_generation, members_cached, look_seconds, CACHE_MAX_SECONDS
        )
        self._last_noted: dict[str, datetime] = {}
        self._noted_lock = threading.Lock()
        try:
            self._db.create_tables(SCHEMA_STATEMENTS)
            self._add_columns()
            self._db.create_tables(INDEX_STATEMENTS)
            if int(self._db.run(COUNT_WITHOUT_ID)[0][0]):
                self._db.run(GIVE_IDS)
        except BaseException:
            self._db.close()
            raise

    def _add_columns(self) -> None:
        """Bring a table of the first version up to date; several workers may do it at once."""
        query = SQLITE_COLUMNS if self.database.kind == "sqlite" else POSTGRES_COLUMNS
        rows = self._db.run(query)
        present = {str(row[1] if self.database.kind == "sqlite" else row[0]) for row in rows}
        for column in ADDED_COLUMNS:
            if column in present:
                continue
            try:
                self._db.run(f"ALTER TABLE {KEYS_TABLE} ADD COLUMN {column} text")
            except (sqlite3.OperationalError, psycopg.errors.DuplicateColumn) as error:
                if "duplicate column" not in str(error) and "already exists" not in str(error):
                    raise
                # Another process added it a moment ago.

    def describe(self) -> str:
        return self.database.describe()

    def now(self) -> datetime:
        return self.clock.now()

    # Keys.

    def create(self, role: str, name: str, expires_at: datetime | None = None) -> str:
        """Store a new key and return it in plain text; this is the only time it is shown."""
        return self.issue(role, name, expires_at)[1]

    def issue(self, role: str, name: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
        """A new key's record and its secret, shown only this once."""
        if role not in KEY_ROLES:
            raise ValueError(f"role must be one of {', '.join(KEY_ROLES)}, not {role!r}")
        if not name.strip() or len(name) > MAX_KEY_NAME:
            raise ValueError(f"a key name has 1-{MAX_KEY_NAME} characters")
        now = self.clock.now()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValueError("an expiry needs a UTC offset")
            if expires_at <= now:
                raise ValueError("an expiry must lie in the future")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            key_id=KEY_ID_PREFIX + secrets.token_hex(6),
            name=name,
            role=role,
            created_at=now,
            last_used_at=None,
            expires_at=expires_at,
            revoked_at=None,
            key_hash=_hash(secret),
        )
        self._db.run(
            INSERT_KEY,
            (
                key.key_hash,
                key.key_id,
                role,
                name,
                _stamp(now),
                None if expires_at is None else _stamp(expires_at),
            ),
        )
        return self.get(key.key_id), secret

    def find(self, secret: str) -> ApiKey | None:
        """The key with this secret, whatever its state, or None if it was never issued."""
        return self._keys.get(_hash(secret), self._key_of, keep=lambda key: key is not None)

    def _key_of(self, digest: str) -> ApiKey | None:
        rows = self._db.run(SELECT_BY_HASH, (digest,))
        return _key(rows[0]) if rows else None

    def role_of(self, secret: str) -> tuple[str, str] | None:
        """(role, name) of a key that works now, or None."""
        key = self.find(secret)
        if key is None or key.state(self.clock.now()) != "active":
            return None
        return key.role, key.name

    def record_use(self, key: ApiKey) -> None:
        """Note that the key was used, at most once a minute per key in this process."""
        now = self.clock.now()
        with self._noted_lock:
            last = self._last_noted.get(key.key_id)
            if last is not None and abs(now - last) < LAST_USED_EVERY:
                return
            self._last_noted[key.key_id] = now
        try:
            self._db.run(NOTE_USE, (_stamp(now), key.key_hash))
        except (sqlite3.Error, psycopg.Error) as error:  # a busy database must not refuse the call
            log.warning("could not note the use of key %s: %s", key.key_id, error)

    def get(self, key_id: str) -> ApiKey:
        rows = self._db.run(SELECT_BY_ID, (key_id,))
        if not rows:
            raise UnknownKey(key_id)
        return _key(rows[0])

    def page(self, after: tuple[datetime, str] | None = None, limit: int = 100) -> list[ApiKey]:
        """Keys oldest first, after (created_at, key_id) of the previous page's last one."""
        # A shop has a few dozen keys, and their stored times come in two text forms: sorted here.
        keys = sorted((_key(row) for row in self._db.run(SELECT_ALL)), key=_order)
        return [key for key in keys if after is None or _order(key) > after][:limit]

    def revoke(self, key_id: str) -> ApiKey:
        """Refuse the key from now on, in every process within a second; idempotent."""
        key = self.get(key_id)
        if key.revoked_at is not None:
            return key
        now = _stamp(self.clock.now())
        self._db.run_together(
            [(BUMP_GENERATION, ()), (REVOKE_KEY, (now, key.key_hash, now, now, key.key_hash))]
        )
        revoked = self.get(key_id)
        if revoked.revoked_at is None:
            raise LastAdminKey(key_id)
        self._forget()
        return revoked

    def rotate(self, key_id: str) -> tuple[ApiKey, str, ApiKey]:
        """A new key with the old one's name, role and expiry, and the old one revoked:
        (new key, its secret, old key)."""
        old = self.get(key_id)
        state = old.state(self.clock.now())
        if state != "active":
            raise KeyNotRotatable(f"{key_id} is {state}; create a new key instead")
        new, secret = self.issue(old.role, old.name, old.expires_at)
        return new, secret, self.revoke(key_id)

    def count(self) -> int:
        return int(self._db.run(COUNT_KEYS)[0][0])

    # Member tokens.

    def revoke_member_tokens(self, member_id: str, at: datetime) -> datetime:
        """Refuse every token of the member issued before ``at``; the instant now in force."""
        self._db.run_together(
            [(REVOKE_TOKENS, (member_id, _stamp(_whole_ms(at)))), (BUMP_GENERATION, ())]
        )
        self._forget()
        found = self.tokens_revoked_before(member_id)
        assert found is not None
        return found

    def tokens_revoked_before(self, member_id: str) -> datetime | None:
        """The instant before which the member's tokens are refused, if there is one."""
        return self._revocations.get(member_id, self._revocation_of)

    def _revocation_of(self, member_id: str) -> datetime | None:
        rows = self._db.run(SELECT_REVOCATION, (member_id,))
        return _instant(rows[0][0]) if rows else None

    def refuses(self, token: MemberTokenClaims) -> bool:
        """Whether the token was issued before its member's tokens were revoked."""
        revoked_before = self.tokens_revoked_before(token.member_id)
        if revoked_before is None:
            return False
        if token.issued_ms is None:
            return True  # a dmt1 token does not say when it was issued
        return token.issued_ms < _ms(revoked_before)

    # The cache.

    def _forget(self) -> None:
        self._keys.forget_all()
        self._revocations.forget_all()

    def _revocation_generation(self) -> int:
        return int(self._db.run(SELECT_GENERATION)[0][0])

    # Secrets and health.

    def signing_secret(self) -> bytes:
        """The member-token signing secret, created once and shared by every process."""
        self._db.run(INSERT_SECRET, (SECRET_NAME, secrets.token_hex(32)))
        return bytes.fromhex(str(self._db.run(SELECT_SECRET, (SECRET_NAME,))[0][0]))

    def ping(self) -> None:
        """Raise if the database does not answer."""
        self._db.run(PING)

    def close(self) -> None:
        self._db.close()


def _key(row: Sequence[Any]) -> ApiKey:
    key_hash, key_id, name, role, created_at, last_used_at, expires_at, revoked_at = row
    return ApiKey(
        key_id=str(key_id),
        name=str(name),
        role=str(role),
        created_at=_instant(created_at),
        last_used_at=_maybe_instant(last_used_at),
        expires_at=_maybe_instant(expires_at),
        revoked_at=_maybe_instant(revoked_at),
        key_hash=str(key_hash),
    )


def _order(key: ApiKey) -> tuple[datetime, str]:
    return key.created_at, key.key_id


def _stamp(moment: datetime) -> str:
    """One fixed text form, so that stored instants compare as text in the same order as time."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _instant(text: Any) -> datetime:
    return datetime.fromisoformat(str(text))


def _maybe_instant(text: Any) -> datetime | None:
    return None if text is None else _instant(text)


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _whole_ms(moment: datetime) -> datetime:
    return EPOCH + timedelta(milliseconds=_ms(moment))


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class MemberTokenClaims:
    """What a genuine member token says."""

    member_id: str
    issued_ms: int | None  # milliseconds since 1970; None for a dmt1 token, which does not say
    expires: int  # seconds since 1970


def is_member_token(credential: str) -> bool:
    return credential.startswith(tuple(prefix + "." for prefix in MEMBER_TOKEN_PREFIXES))


def mint_member_token(
    secret: bytes, member_id: str, expires_at: datetime, *, issued_at: datetime
) -> str:
    """A URL-safe token that proves, until it expires, that the bearer acts for one member;
    it says when it was issued, so that a revocation refuses the tokens issued before it."""
    payload = (
        f"{MEMBER_TOKEN_PREFIX}.{_b64encode(member_id.encode())}.{_ms(issued_at)}"
        f".{int(expires_at.timestamp())}"
    )
    return f"{payload}.{_sign(secret, payload)}"


def read_member_token(secret: bytes, token: str, now: datetime) -> MemberTokenClaims | None:
    """What the token says, or None if it is forged, malformed or expired (dmt1 or dmt2)."""
    parts = token.split(".")
    if parts[0] == MEMBER_TOKEN_PREFIX and len(parts) == 5:
        issued: str | None = parts[2]
    elif parts[0] == LEGACY_MEMBER_TOKEN_PREFIX and len(parts) == 4:
        issued = None
    else:
        return None
    payload = ".".join(parts[:-1])
    if not hmac.compare_digest(_sign(secret, payload).encode(), parts[-1].encode()):
        return None
    try:
        member_id = _b64decode(parts[1]).decode()
        expires = int(parts[-2])
        issued_ms = None if issued is None else int(issued)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if now.timestamp() >= expires:
        return None
    return MemberTokenClaims(member_id, issued_ms, expires)


def verify_member_token(secret: bytes, token: str, now: datetime) -> str | None:
    """The member id the token was minted for, or None if it is forged, malformed or expired."""
    claims = read_member_token(secret, token, now)
    return None if claims is None else claims.member_id


def _sign(secret: bytes, payload: str) -> str:
    return _b64encode(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
