"""Configuration read from the environment, turned into what the event store needs."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_SQLITE_PATH = Path("var") / "daifuku.db"
COMPRESSOR_TOPIC = "eventsourcing.compressor:ZlibCompressor"
# The library's PostgreSQL recorder, with the table lock held for one statement, not a round trip.
POSTGRES_RECORDER_TOPIC = "adapters.recorders:LockedInsertApplicationRecorder"
SQLITE_RECORDER_TOPIC = "adapters.recorders:ProbingSQLiteApplicationRecorder"


class ConfigurationError(ValueError):
    """A configuration variable has a value the server cannot use."""


@dataclass(frozen=True)
class Database:
    """Where the ledger lives: an SQLite file or a PostgreSQL database."""

    kind: str  # "sqlite" or "postgres"
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    name: str = ""
    schema: str = ""

    @classmethod
    def from_url(cls, url: str | None) -> Database:
        if not url:
            return cls(kind="sqlite", path=str(DEFAULT_SQLITE_PATH))
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            # sqlite:///relative/path.db and sqlite:////absolute/path.db
            path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
            if not path:
                raise ConfigurationError(f"DAIFUKU_DATABASE_URL {url!r} names no file")
            return cls(kind="sqlite", path=path)
        if parts.scheme in ("postgresql", "postgres"):
            name = unquote(parts.path.lstrip("/"))
            if not name:
                raise ConfigurationError(f"DAIFUKU_DATABASE_URL {url!r} names no database")
            options = parse_qs(parts.query)
            return cls(
                kind="postgres",
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 5432,
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""),
                name=name,
                schema=options.get("schema", [""])[0],
            )
        raise ConfigurationError(
            f"DAIFUKU_DATABASE_URL {url!r}: use sqlite:///path or postgresql://user:pass@host:port/db"
        )

    def event_store_env(self, pool_size: int = 10) -> dict[str, str]:
        """The eventsourcing library's environment for this database."""
        # Events and snapshots are stored as zlib-compressed JSON: a long member's snapshot
        # shrinks about 14-fold, and so do the buffers every pooled connection keeps.
        return {**self._store_env(pool_size), "COMPRESSOR_TOPIC": COMPRESSOR_TOPIC}

    def _store_env(self, pool_size: int) -> dict[str, str]:
        if self.kind == "sqlite":
            if self.path not in (":memory:",) and not self.path.startswith("file:"):
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.path,
                "SQLITE_LOCK_TIMEOUT": "10",
                "APPLICATION_RECORDER_TOPIC": SQLITE_RECORDER_TOPIC,
            }
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.name,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": str(pool_size),
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": POSTGRES_RECORDER_TOPIC,
        }
        if self.schema:
            env["POSTGRES_SCHEMA"] = self.schema
        return env

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite file {self.path}"
        return f"PostgreSQL database {self.name} on {self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the server takes from the environment, read once, in ``from_environ``."""

    # The variables from_environ reads, and the only ones the product reads; the README's
    # configuration table lists exactly these (tests/unit/test_settings.py holds all three equal).
    VARIABLES: ClassVar[tuple[str, ...]] = (
        "DAIFUKU_DATABASE_URL",
        "DAIFUKU_CACHE_SIZE",
        "DAIFUKU_SNAPSHOT_INTERVAL",
        "DAIFUKU_TOKEN_TTL_SECONDS",
        "DAIFUKU_SECRET_KEY",
        "DAIFUKU_MASTER_KEY",
        "DAIFUKU_READ_MODELS",
        "DAIFUKU_READ_WAIT_SECONDS",
        "DAIFUKU_WRITE_CONCURRENCY",
        "DAIFUKU_RUN_SCHEDULER",
        "DAIFUKU_LOG_FORMAT",
        "DAIFUKU_WEBHOOKS_ALLOW_PRIVATE",
        "DAIFUKU_WEBHOOKS_RETENTION_DAYS",
        "DAIFUKU_FOLLOWUPS",
    )

    database: Database
    cache_size: int
    snapshot_interval: int
    token_ttl_seconds: int
    read_models: str = "views"  # or "ledger": every read folds the member in the ledger
    read_wait_seconds: float = 2.0
    write_concurrency: int = 1  # writes a server process runs at once (api/admission.py)
    # Signs member tokens; None: the secret generated once and kept in the database.
    secret_key: str | None = field(default=None, repr=False)
    run_scheduler: bool = False  # api/wsgi.py runs the scheduler in each worker
    # Wraps every member's data key; None: the key generated once and kept in the database.
    master_key: bytes | None = field(default=None, repr=False)
    log_format: str = "plain"  # or "json": one JSON object a line (api/logs.py)
    # Webhook endpoints over plain http and on loopback or private addresses (development).
    webhooks_allow_private: bool = False
    webhooks_retention_days: int = 30  # finished deliveries and their attempts are kept this long
    # The follow-up process in ``daifuku serve``'s background work; off only to measure its cost.
    followups: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            database=Database.from_url(env.get("DAIFUKU_DATABASE_URL")),
            cache_size=_positive_int(env, "DAIFUKU_CACHE_SIZE", 2000),
            snapshot_interval=_positive_int(env, "DAIFUKU_SNAPSHOT_INTERVAL", 100),
            token_ttl_seconds=_positive_int(env, "DAIFUKU_TOKEN_TTL_SECONDS", 3600),
            secret_key=env.get("DAIFUKU_SECRET_KEY") or None,
            read_models=_choice(env, "DAIFUKU_READ_MODELS", ("views", "ledger")),
            read_wait_seconds=_seconds(env, "DAIFUKU_READ_WAIT_SECONDS", 2.0),
            write_concurrency=_positive_int(env, "DAIFUKU_WRITE_CONCURRENCY", 1),
            run_scheduler=_switch(env, "DAIFUKU_RUN_SCHEDULER"),
            master_key=_master_key(env, "DAIFUKU_MASTER_KEY"),
            log_format=_choice(env, "DAIFUKU_LOG_FORMAT", ("plain", "json")),
            webhooks_allow_private=_switch(env, "DAIFUKU_WEBHOOKS_ALLOW_PRIVATE"),
            webhooks_retention_days=_positive_int(env, "DAIFUKU_WEBHOOKS_RETENTION_DAYS", 30),
            followups=_choice(env, "DAIFUKU_FOLLOWUPS", ("on", "off")) == "on",
        )


def _master_key(env: Mapping[str, str], name: str) -> bytes | None:
    """32 random bytes in URL-safe base64, as ``secrets.token_urlsafe(32)`` makes them."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32 or not re.fullmatch(r"[A-Za-z0-9_-]+=*", raw):
        raise ConfigurationError(
            f"{name} must be 32 bytes in URL-safe base64 (43 characters; make one with "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`); the server does "
            "not start without a usable key"
        )
    return key


def _switch(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigurationError(f"{name} must be 1 (on) or 0 (off), not {raw!r}")
    return raw == "1"


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= 60:
        raise ConfigurationError(f"{name} must be between 0 and 60 seconds, not {value}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value}")
    return value
