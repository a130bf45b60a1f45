"""API keys (stored hashed) and member tokens (HMAC-signed, expiring), in the ledger's database."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from adapters.settings import Database
from adapters.sidetables import PING, Connection, connect

KEY_ROLES = ("storefront", "auditor", "admin")
KEY_PREFIX = "dfk_"
MEMBER_TOKEN_PREFIX = "dmt1"
SECRET_NAME = "member-token-signing"
MAX_KEY_NAME = 100

SCHEMA_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS daifuku_api_keys ("
    " key_hash text PRIMARY KEY, role text NOT NULL, name text NOT NULL, created_at text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daifuku_secrets (name text PRIMARY KEY, value text NOT NULL)",
)
INSERT_KEY = "INSERT INTO daifuku_api_keys (key_hash, role, name, created_at) VALUES (?, ?, ?, ?)"
SELECT_KEY = "SELECT role, name FROM daifuku_api_keys WHERE key_hash = ?"
COUNT_KEYS = "SELECT COUNT(*) FROM daifuku_api_keys"
INSERT_SECRET = "INSERT INTO daifuku_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
SELECT_SECRET = "SELECT value FROM daifuku_secrets WHERE name = ?"


class KeyStore:
    """Storefront, auditor and admin API keys; only the SHA-256 of a key is ever stored."""

    def __init__(self, database: Database, cache_size: int = 1024) -> None:
        self.database = database
        self._db: Connection = connect(database, name="daifuku-keys")
        self._cache: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._db.create_tables(SCHEMA_STATEMENTS)

    def describe(self) -> str:
        return self.database.describe()

    def create(self, role: str, name: str) -> str:
        """Store a new key and return it in plain text; this is the only time it is shown."""
        if role not in KEY_ROLES:
            raise ValueError(f"role must be one of {', '.join(KEY_ROLES)}, not {role!r}")
        if not name.strip() or len(name) > MAX_KEY_NAME:
            raise ValueError(f"a key name has 1-{MAX_KEY_NAME} characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created_at = datetime.now(UTC).isoformat()
        self._db.run(INSERT_KEY, (_hash(key), role, name, created_at))
        return key

    def role_of(self, key: str) -> tuple[str, str] | None:
        """(role, name) of a key, or None if it was never issued."""
        digest = _hash(key)
        with self._cache_lock:
            hit = self._cache.get(digest)
            if hit is not None:
                self._cache.move_to_end(digest)
                return hit
        rows = self._db.run(SELECT_KEY, (digest,))
        if not rows:
            return None
        found = (str(rows[0][0]), str(rows[0][1]))
        with self._cache_lock:
            self._cache[digest] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def count(self) -> int:
        return int(self._db.run(COUNT_KEYS)[0][0])

    def signing_secret(self) -> bytes:
        """The member-token signing secret, created once and shared by every process."""
        self._db.run(INSERT_SECRET, (SECRET_NAME, secrets.token_hex(32)))
        return bytes.fromhex(str(self._db.run(SELECT_SECRET, (SECRET_NAME,))[0][0]))

    def ping(self) -> None:
        """Raise if the database does not answer."""
        self._db.run(PING)

    def close(self) -> None:
        self._db.close()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_member_token(secret: bytes, member_id: str, expires_at: datetime) -> str:
    """A URL-safe token that proves, until it expires, that the bearer acts for one member."""
    payload = (
        f"{MEMBER_TOKEN_PREFIX}.{_b64encode(member_id.encode())}.{int(expires_at.timestamp())}"
    )
    return f"{payload}.{_sign(secret, payload)}"


def verify_member_token(secret: bytes, token: str, now: datetime) -> str | None:
    """The member id the token was minted for, or None if it is forged, malformed or expired."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != MEMBER_TOKEN_PREFIX:
        return None
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(_sign(secret, payload).encode(), parts[3].encode()):
        return None
    try:
        member_id = _b64decode(parts[1]).decode()
        expires = int(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if now.timestamp() >= expires:
        return None
    return member_id


def _sign(secret: bytes, payload: str) -> str:
    return _b64encode(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
