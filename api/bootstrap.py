"""The composition root: the ledger, the key store and the token secret, built from settings."""

from __future__ import annotations

import sqlite3
import time

import psycopg
from eventsourcing.persistence import PersistenceError
from flask import Flask

from adapters import upgrade
from adapters.followup_tables import FollowupTables
from adapters.import_rejections import TableRejections
from adapters.keys import KeyStore
from adapters.settings import Settings
from adapters.vault import Vault
from adapters.verification_jobs import VerificationJobs
from adapters.views import open_member_status_view
from adapters.webhook_outbox import Outbox
from adapters.webhooks import Webhooks
from api import representations
from api.app import create_app
from api.context import EXTENSION, Backend
from domain.actors import Actor, Cause
from domain.clock import Clock, SystemClock
from domain.ledger import Ledger
from domain.members import member_uuid
from domain.snapshots import SNAPSHOT_TOPIC

STARTUP_ATTEMPTS = 5
LEGACY_SEALED_FLAG = "legacy-personal-data-sealed"
LEGACY_SEALING = Cause("upgrade:seal-personal-data", Actor.system("upgrade"))


def bootstrap(settings: Settings, clock: Clock | None = None) -> tuple[Ledger, KeyStore, bytes]:
    """The ledger with its personal-data vault, the key store and the token secret
    (``settings.secret_key`` if set, else the one kept in the database); everything comes
    from ``settings``. A ledger an older version wrote gets its plain personal data sealed."""
    clock = clock or SystemClock()
    env = settings.database.event_store_env()
    env["AGGREGATE_CACHE_MAXSIZE"] = str(settings.cache_size)
    for attempt in range(STARTUP_ATTEMPTS):
        vault = None
        try:
            vault = Vault.open_database(settings.database, settings.master_key)
            ledger = Ledger(
                env=env,
                clock=clock,
                snapshot_interval=settings.snapshot_interval,
                sealer=vault,
            )
            break
        except (PersistenceError, psycopg.Error, sqlite3.Error):
            # Workers starting together on a fresh database race to create the same tables.
            if vault is not None:
                vault.close()
            if attempt == STARTUP_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    try:
        assert vault is not None
        seal_legacy_personal_data(ledger, vault)
    except BaseException:
        ledger.close()
        raise
    for attempt in range(STARTUP_ATTEMPTS):
        try:
            keys = KeyStore(settings.database, clock=clock)
            break
        except (PersistenceError, psycopg.Error, sqlite3.Error):
            if attempt == STARTUP_ATTEMPTS - 1:
                ledger.close()
                raise
            time.sleep(0.1 * (attempt + 1))
        except BaseException:
            ledger.close()
            raise
    secret = settings.secret_key.encode() if settings.secret_key else keys.signing_secret()
    return ledger, keys, secret


def seal_legacy_personal_data(ledger: Ledger, vault: Vault) -> int:
    """Once per database: seal the email and name of the members an older version enrolled in
    plain text, then remove the plain copies from their first events and every snapshot of an
    older shape (adapters/upgrade.py); how many members were found."""
    if vault.flag(LEGACY_SEALED_FLAG):
        return 0
    found = ledger.seal_legacy_personal_data(LEGACY_SEALING)
    for member_id in found:
        upgrade.redact_plain_fields(ledger, member_uuid(member_id))
    upgrade.delete_old_snapshots(ledger, SNAPSHOT_TOPIC)
    vault.set_flag(LEGACY_SEALED_FLAG)
    return len(found)


def build_app(settings: Settings, clock: Clock | None = None) -> tuple[Flask, Ledger, KeyStore]:
    """The whole server, reading from the views unless settings say otherwise; the caller
    closes it with ``close_app`` when it stops."""
    clock = clock or SystemClock()
    ledger, keys, secret = bootstrap(settings, clock)
    views = None
    rejections = None
    try:
        if settings.read_models == "views":
            views = open_member_status_view(ledger.env)
        rejections = TableRejections(settings.database)
        verifications = VerificationJobs.on_database(
            settings.database, ledger, representations, clock
        )
        webhooks = Webhooks(ledger, Outbox.open(settings.database), settings.webhooks_allow_private)
        # Read only by the analytics of follow-ups: on the outbox's connection, not a pool more.
        followups = FollowupTables(webhooks.outbox.db)
    except BaseException:
        if views is not None:
            views.close()
        if rejections is not None:
            rejections.close()
        ledger.close()
        keys.close()
        raise
    app = create_app(
        ledger,
        keys,
        token_secret=secret,
        clock=clock,
        token_ttl_seconds=settings.token_ttl_seconds,
        views=views,
        read_wait_seconds=settings.read_wait_seconds,
        write_concurrency=settings.write_concurrency,
        import_rejections=rejections,
        verifications=verifications,
        webhooks=webhooks,
        followups=followups,
    )
    return app, ledger, keys


def close_app(app: Flask) -> None:
    """Close what ``build_app`` opened."""
    found: Backend = app.extensions[EXTENSION]
    found.verifications.close()  # a job running here ends as interrupted
    if found.views is not None:
        found.views.close()
    if found.webhooks is not None:
        found.webhooks.outbox.close()
    found.ledger.close()
    found.keys.close()
    close = getattr(found.import_rejections, "close", None)
    if close is not None:
        close()
