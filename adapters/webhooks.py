"""Webhook subscriptions: made, read, changed, rotated, replayed and removed, as events of a
``Subscription`` aggregate in the ledger (``domain/webhooks.py``).

Secrets are sealed by the ledger's vault under a data key of the subscription's own, so the
event log and its export hold none in plain text; removing a subscription destroys the key.
A small table (the outbox's endpoints) lists the subscriptions in the order they were made.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from adapters.vault import Vault
from adapters.webhook_http import new_secret
from adapters.webhook_outbox import Outbox
from adapters.webhook_urls import check_url
from domain.actors import Actor, Cause
from domain.ledger import Ledger
from domain.webhooks import Subscription, check_types

SECRET_FIELD = "webhook-secret"
SAVE_ATTEMPTS = 5
CACHE_SECONDS = 1.0  # how long the deliverer trusts what it read of a subscription
DISPATCHER = Actor.system("webhooks")


class UnknownWebhook(LookupError):
    pass


class WebhookRefused(ValueError):
    """Input that cannot be a subscription: ``field`` says which part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WebhookDisabled(ValueError):
    pass


def key_name(endpoint_id: str) -> str:
    """The vault's name for a subscription's data key: "/" is never in a member id."""
    return f"webhook/{endpoint_id}"


# A subscription, and its sealed secrets (current and previous) opened.
Opened = tuple[Subscription, dict[str, str | None]]


@dataclass(frozen=True)
class Signing:
    """What the deliverer needs of a subscription to send to it."""

    url: str
    secrets: list[str]
    enabled: bool


class Webhooks:
    def __init__(self, ledger: Ledger, outbox: Outbox, allow_private: bool = False) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.allow_private = allow_private
        # Until when (monotonic) what was read of a subscription is trusted, and what was read.
        self._signing: dict[str, tuple[float, Opened | None]] = {}
        self._lock = threading.Lock()

    # Reads.

    def get(self, endpoint_id: str) -> Subscription:
        try:
            found: Any = self.ledger.repository.get(uuid.UUID(endpoint_id))
        except (AggregateNotFoundError, ValueError):
            raise UnknownWebhook(f"no webhook {endpoint_id}") from None
        if not isinstance(found, Subscription) or found.removed:
            raise UnknownWebhook(f"no webhook {endpoint_id}")
        return found

    def page(self, after: tuple[float, str] | None, limit: int) -> list[Subscription]:
        found: list[Subscription] = []
        cursor = after
        while len(found) < limit:
            ids = self.outbox.endpoint_ids(cursor, limit)
            if not ids:
                break
            for created_at, endpoint_id in ids:
                cursor = (created_at, endpoint_id)
                try:
                    found.append(self.get(endpoint_id))
                except UnknownWebhook:
                    continue
                if len(found) == limit:
                    break
        return found

    def cursor_of(self, subscription: Subscription) -> tuple[float, str]:
        return subscription.created_on.timestamp(), str(subscription.id)

    # Writes.

    def subscribe(
        self,
        url: str,
        types: list[str],
        description: str | None,
        include_imports: bool,
        cause: Cause,
    ) -> tuple[Subscription, str]:
        """A new subscription and its secret (``whsec_...``), shown only now."""
        self._check(url, types)
        endpoint_id = uuid.uuid4()
        secret = new_secret()
        sealed = self.ledger.sealer.seal(key_name(str(endpoint_id)), SECRET_FIELD, secret)
        now = self.ledger.clock.now()
        subscription = Subscription.subscribe(
            endpoint_id, url, types, description, include_imports, sealed, cause, now
        )
        self.ledger.save(subscription)
        self.outbox.register(str(endpoint_id), now.timestamp())
        return subscription, secret

    def change(self, endpoint_id: str, changes: dict[str, Any], cause: Cause) -> Subscription:
        """Change url, types, description, include_imports and ``enabled``."""
        enabled = changes.pop("enabled", None)
        if "url" in changes or "types" in changes:
            current = self.get(endpoint_id)
            self._check(changes.get("url", current.url), changes.get("types", current.types))

        def command(subscription: Subscription, now: datetime) -> None:
            subscription.change(changes, cause, now)
            if enabled is True:
                subscription.enable(cause, now)
            elif enabled is False:
                subscription.disable("disabled by the operator", cause, now)

        return self._update(endpoint_id, command)

    def disable(self, endpoint_id: str, reason: str) -> None:
        """The deliverer's doing: the endpoint answered 410, or failed for days."""
        cause = Cause(f"webhooks:{endpoint_id}:{int(time.time())}", DISPATCHER)
        with contextlib.suppress(UnknownWebhook):  # removed meanwhile
            self._update(endpoint_id, lambda s, now: s.disable(reason, cause, now))

    def rotate(self, endpoint_id: str, cause: Cause) -> tuple[Subscription, str]:
        secret = new_secret()
        sealed = self.ledger.sealer.seal(key_name(endpoint_id), SECRET_FIELD, secret)
        subscription = self._update(endpoint_id, lambda s, now: s.rotate(sealed, cause, now))
        return subscription, secret

    def replay(self, endpoint_id: str, after: int, cause: Cause) -> tuple[Subscription, str, int]:
        """Ask the dispatcher to deliver again everything after ``after`` up to the log's head
        now; the replay's id and that head."""
        current = self.get(endpoint_id)
        if not current.enabled:
            raise WebhookDisabled(
                f"webhook {endpoint_id} is disabled ({current.disabled_reason}); enable it first"
            )
        head = self.head()
        if after > head:
            raise WebhookRefused("after", f"is beyond the log's last position, {head}")
        replay_id = uuid.uuid4().hex
        subscription = self._update(
            endpoint_id, lambda s, now: s.request_replay(replay_id, after, head, cause, now)
        )
        return subscription, replay_id, head

    def remove(self, endpoint_id: str, cause: Cause) -> Subscription:
        subscription = self._update(endpoint_id, lambda s, now: s.remove(cause, now))
        if isinstance(self.ledger.sealer, Vault):
            # Its secrets can never be read again; no wait for other processes to forget the
            # key, since they stop signing for a removed subscription anyway.
            self.ledger.sealer.erase(key_name(endpoint_id), wait=False)
        self.forget(endpoint_id)
        return subscription

    # For the deliverer.

    def signing(self, endpoint_id: str, now: datetime) -> Signing | None:
        """The url and plain secrets that sign a message sent at ``now`` (ledger time, as a
        rotation's end is), or None once removed; the subscription is read again at most
        every ``CACHE_SECONDS``, the secrets are chosen at every call."""
        with self._lock:
            cached = self._signing.get(endpoint_id)
        if cached is None or cached[0] <= time.monotonic():
            cached = (time.monotonic() + CACHE_SECONDS, self._read_signing(endpoint_id))
            with self._lock:
                self._signing[endpoint_id] = cached
        found = cached[1]
        if found is None:
            return None
        subscription, opened = found
        secrets = [opened[sealed] for sealed in subscription.signing_secrets(now)]
        plain = [secret for secret in secrets if secret is not None]
        return Signing(subscription.url, plain, subscription.enabled)

    def _read_signing(self, endpoint_id: str) -> Opened | None:
        try:
            subscription = self.get(endpoint_id)
        except UnknownWebhook:
            return None
        name = key_name(endpoint_id)
        sealed = [subscription.sealed_secret, subscription.previous_secret]
        opened = {s: self.ledger.sealer.open(name, SECRET_FIELD, s) for s in sealed if s}
        return subscription, opened

    def forget(self, endpoint_id: str) -> None:
        with self._lock:
            self._signing.pop(endpoint_id, None)

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def position_before(self, since: datetime) -> int:
        """The last position recorded before ``since`` (0 if none): a binary search on the
        events' recorded times, which follow the log's order."""
        low, high = 0, self.head()  # the answer lies in [low, high]
        recorder, mapper = self.ledger.recorder, self.ledger.mapper
        while low < high:
            middle = (low + high + 1) // 2
            found = recorder.select_notifications(start=middle, limit=1, stop=high)
            if not found:
                high = middle - 1
                continue
            event: Any = mapper.to_domain_event(found[0])
            recorded: datetime = event.timestamp
            if recorded < since:
                low = found[0].id  # at least middle: the search narrows
            else:
                high = middle - 1
        return low

    def _check(self, url: str, types: list[str]) -> None:
        problem = check_url(url, self.allow_private)
        if problem is not None:
            raise WebhookRefused("url", problem)
        problem = check_types(types)
        if problem is not None:
            raise WebhookRefused("types", problem)

    def _update(self, endpoint_id: str, command: Any) -> Subscription:
        for attempt in range(SAVE_ATTEMPTS):
            subscription = self.get(endpoint_id)
            command(subscription, self.ledger.clock.now())
            try:
                self.ledger.save(subscription)
                self.forget(endpoint_id)  # a rotation or a new url is signed with at once
                return subscription
            except IntegrityError:  # changed meanwhile: do it again on the new version
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")
