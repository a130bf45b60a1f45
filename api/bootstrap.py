"""The composition root: the ledger, the key store and the token secret, built from settings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from adapters.keys import KeyStore
from adapters.settings import Settings
from api.app import create_app
from domain.clock import Clock, SystemClock
from domain.ledger import Ledger

SECRET_KEY_VARIABLE = "DAIFUKU_SECRET_KEY"


def bootstrap(
    settings: Settings, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Ledger, KeyStore, bytes]:
    env = settings.database.event_store_env()
    env["AGGREGATE_CACHE_MAXSIZE"] = str(settings.cache_size)
    ledger = Ledger(
        env=env, clock=clock or SystemClock(), snapshot_interval=settings.snapshot_interval
    )
    try:
        keys = KeyStore(settings.database)
    except BaseException:
        ledger.close()
        raise
    override = (os.environ if environ is None else environ).get(SECRET_KEY_VARIABLE, "")
    secret = override.encode() if override else keys.signing_secret()
    return ledger, keys, secret


def build_app(
    settings: Settings, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Flask, Ledger, KeyStore]:
    """The whole server; the caller closes the ledger and the key store when it stops."""
    clock = clock or SystemClock()
    ledger, keys, secret = bootstrap(settings, clock, environ)
    app = create_app(
        ledger,
        keys,
        token_secret=secret,
        clock=clock,
        token_ttl_seconds=settings.token_ttl_seconds,
    )
    return app, ledger, keys
