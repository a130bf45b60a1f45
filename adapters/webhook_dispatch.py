"""The webhook dispatcher: follows the ledger's log, turns each event a subscription covers
into a delivery, and sends the deliveries that are due, retrying with backoff.

Two halves in one background loop:

- ``WebhookDispatch`` is a projection (the library's pattern): each page of the log becomes
  deliveries in the outbox, written with the page's position in one transaction. It learns
  the subscriptions from their own events in the same log, so a subscription made at a
  position receives exactly the events after it, whatever the crashes.
- ``Deliverer`` sends what is due on a pool of threads: a member's events reach an endpoint in
  the order they were recorded, and a slow or dead endpoint holds only its own deliveries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from adapters.background import BackgroundLoop
from adapters.settings import Database
from adapters.webhook_http import Attempt, Sender, sign
from adapters.webhook_outbox import (
    CANCELLED,
    DELIVERED,
    FAILED,
    PAUSED,
    PENDING,
    Due,
    Endpoint,
    Outbox,
    Outcome,
    Queued,
    Replay,
)
from adapters.webhooks import Webhooks
from domain.ledger import Ledger
from domain.webhooks import BY_TOPIC, Message, Subscription, message_of, subscribed

log = logging.getLogger(__name__)
NAME = "webhooks"  # the dispatcher's tracking name
PAGE = 500
REPLAY_PAGE = 1_000
# Seconds after a failed attempt before the next, per PROGRAM.md: about immediately, 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h; then the delivery has failed.
RETRY_SCHEDULE = (5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400)
JITTER = 0.1  # each wait is moved by up to a tenth either way
RETRY_AFTER_MOST = 86_400.0
# One dispatcher at a time: it renews its lease every second; one killed is replaced once its
# lease has run out.
LEASE_SECONDS = 5.0
LEASE_RENEW_SECONDS = 1.0
GATHER_SECONDS = 0.005  # after an attempt ends, how long to wait for others to record together
POLL_SECONDS = 0.1  # between looks at the log once caught up (the delivery lag's share)
RETENTION_DAYS = 30  # finished deliveries and their attempts are kept this long
PRUNE_EVERY_SECONDS = 3_600.0
PRUNE_PAGE = 5_000  # deliveries forgotten a transaction
PRUNE_MOST = 50_000  # a pass, before the dispatcher goes back to its work
GIVE_UP_ENDPOINT_SECONDS = 5 * 86_400.0  # an endpoint failing this long is disabled
SUBSCRIPTION_TOPICS = {
    get_topic(cls): cls
    for cls in (
        Subscription.Subscribed,
        Subscription.Changed,
        Subscription.Disabled,
        Subscription.Enabled,
        Subscription.SecretRotated,
        Subscription.ReplayRequested,
        Subscription.Removed,
    )
}


def body_of(message: Message) -> str:
    return json.dumps(
        {"type": message.type, "timestamp": message.recorded_at.isoformat(), "data": message.data},
        separators=(",", ":"),
    )


def message_id(position: int) -> str:
    """The ``webhook-id`` of the message of the event at ``position``: the same at every
    attempt and replay, so receivers can deduplicate."""
    return f"msg_{position}"


def queued_for(endpoint_id: str, position: int, message: Message, state: str = PENDING) -> Queued:
    return Queued(
        endpoint_id,
        position,
        message.member_id,
        message.type,
        message_id(position),
        body_of(message),
        message.recorded_at.timestamp(),
        state,
    )


@dataclass
class _Batch:
    queued: list[Queued]
    endpoints: dict[str, tuple[Endpoint, float]]
    replays: list[tuple[Replay, float]]
    states: list[tuple[str, str, str, float]]


class WebhookDispatch(Projection[Outbox]):
    """Deliveries from the log, and what it knows of the subscriptions as of its position."""

    name = NAME

    def __init__(self, outbox: Outbox, now: Callable[[], float] = time.time) -> None:
        super().__init__(outbox)
        self.now = now
        self.endpoints: dict[str, Endpoint] = {e.endpoint_id: e for e in outbox.endpoints()}

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.process_batch([(get_topic(type(domain_event)), domain_event, tracking)])

    def process_batch(self, batch: Sequence[tuple[str, Any, Tracking]]) -> int:
        """Record the deliveries of ``batch`` (topic, event, tracking, in log order) and its
        last position; how many deliveries."""
        now = self.now()
        found = _Batch([], {}, [], [])
        endpoints = dict(self.endpoints)
        for topic, event, tracking in batch:
            if topic in SUBSCRIPTION_TOPICS:
                self._subscription_event(endpoints, event, tracking, found, now)
                continue
            message = message_of(topic, event, tracking.notification_id)
            if message is None:
                continue
            for endpoint in endpoints.values():
                if not endpoint.removed and subscribed(
                    endpoint.types, endpoint.include_imports, message
                ):
                    state = PENDING if endpoint.active else PAUSED  # disabled: it waits
                    found.queued.append(
                        queued_for(endpoint.endpoint_id, tracking.notification_id, message, state)
                    )
        self.view.write(
            batch[-1][2], found.queued, found.endpoints.values(), found.replays, found.states, now
        )
        self.endpoints = endpoints
        return len(found.queued)

    def _subscription_event(
        self,
        endpoints: dict[str, Endpoint],
        event: Any,
        tracking: Tracking,
        found: _Batch,
        now: float,
    ) -> None:
        endpoint_id = str(event.originator_id)
        old = endpoints.get(endpoint_id)
        created = event.timestamp.timestamp()
        if isinstance(event, Subscription.Subscribed):
            new = Endpoint(endpoint_id, list(event.types), event.include_imports, True)
        elif old is None:
            return  # a subscription this dispatcher never saw made: nothing to deliver
        elif isinstance(event, Subscription.Changed):
            changes = event.changes
            new = Endpoint(
                endpoint_id,
                list(changes.get("types", old.types)),
                bool(changes.get("include_imports", old.include_imports)),
                old.active,
            )
        elif isinstance(event, Subscription.Disabled):
            new = Endpoint(endpoint_id, old.types, old.include_imports, False)
            found.states.append((endpoint_id, PENDING, PAUSED, now))
        elif isinstance(event, Subscription.Enabled):
            new = Endpoint(endpoint_id, old.types, old.include_imports, True)
            found.states.append((endpoint_id, PAUSED, PENDING, now))
        elif isinstance(event, Subscription.Removed):
            new = Endpoint(endpoint_id, old.types, old.include_imports, False, removed=True)
            found.states.append((endpoint_id, PENDING, CANCELLED, now))
            found.states.append((endpoint_id, PAUSED, CANCELLED, now))
        elif isinstance(event, Subscription.ReplayRequested):
            found.replays.append(
                (Replay(event.replay_id, endpoint_id, event.after, event.until), created)
            )
            return
        else:
            return  # a rotated secret changes nothing the dispatcher keeps
        endpoints[endpoint_id] = new
        previous = found.endpoints.get(endpoint_id)
        found.endpoints[endpoint_id] = (new, previous[1] if previous else created)


class Dispatcher:
    """Feeds ``WebhookDispatch`` the log a page at a time from its tracking position, and
    works through the replays operators asked for."""

    def __init__(
        self,
        ledger: Ledger,
        outbox: Outbox,
        page: int = PAGE,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.page = page
        self.now = now
        self.projection = WebhookDispatch(outbox, now)
        self.position = outbox.max_tracking_id(NAME) or 0

    def catch_up(self) -> int:
        """One page of the log; how many events it read."""
        notifications = self.ledger.recorder.select_notifications(
            start=self.position + 1, limit=self.page
        )
        if not notifications:
            return 0
        mapper = self.ledger.mapper
        # With no subscription to send to (a shop without webhooks), only the subscriptions'
        # own events are read: member events are not decoded for nobody.
        wanted = SUBSCRIPTION_TOPICS.keys() | (
            BY_TOPIC.keys()
            if any(not e.removed for e in self.projection.endpoints.values())
            or any(n.topic in SUBSCRIPTION_TOPICS for n in notifications)
            else set()
        )
        batch: list[tuple[str, Any, Tracking]] = []
        for notification in notifications:
            topic = notification.topic
            tracking = Tracking(NAME, notification.id)
            if topic in wanted:
                batch.append((topic, mapper.to_domain_event(notification), tracking))
        last = Tracking(NAME, notifications[-1].id)
        if not batch or batch[-1][2].notification_id != last.notification_id:
            batch.append(("", None, last))  # no delivery: only the position moves on
        self.projection.process_batch(batch)
        self.position = last.notification_id
        return len(notifications)

    def replay_step(self) -> int:
        """A page of each replay asked for; how many events were read."""
        read = 0
        for replay in self.outbox.replays():
            endpoint = self.projection.endpoints.get(replay.endpoint_id)
            if endpoint is None or not endpoint.active or replay.next_after >= replay.until:
                self.outbox.requeue(replay, [], replay.until, self.now())
                continue
            notifications = self.ledger.recorder.select_notifications(
                start=replay.next_after + 1, limit=REPLAY_PAGE, stop=replay.until
            )
            queued = []
            for notification in notifications:
                if notification.topic not in BY_TOPIC:
                    continue
                event = self.ledger.mapper.to_domain_event(notification)
                message = message_of(notification.topic, event, notification.id)
                if message is not None and subscribed(
                    endpoint.types, endpoint.include_imports, message
                ):
                    queued.append(queued_for(endpoint.endpoint_id, notification.id, message))
            to = notifications[-1].id if notifications else replay.until
            if len(notifications) < REPLAY_PAGE:
                to = replay.until
            self.outbox.requeue(replay, queued, to, self.now())
            read += len(notifications)
        return read


def next_attempt(tries: int, attempt: Attempt, now: float) -> float | None:
    """When to try again after the ``tries``-th failed attempt (None: no retry left)."""
    if tries > len(RETRY_SCHEDULE):
        return None
    wait_seconds = RETRY_SCHEDULE[tries - 1] * random.uniform(1 - JITTER, 1 + JITTER)
    if attempt.status in (429, 503) and attempt.retry_after is not None:
        wait_seconds = max(wait_seconds, min(attempt.retry_after, RETRY_AFTER_MOST))
    return now + wait_seconds


class Deliverer:
    """Sends the due deliveries on ``threads`` threads, at most ``per_endpoint`` at a time to
    one endpoint, and records every attempt."""

    def __init__(
        self,
        outbox: Outbox,
        webhooks: Webhooks,
        sender: Sender,
        threads: int = 16,
        per_endpoint: int = 16,
        observe: Callable[[Outcome, float], None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.now = now  # the clock of due times and retries (tests move it on)
        self.outbox = outbox
        self.webhooks = webhooks
        self.sender = sender
        self.per_endpoint = per_endpoint
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="daifuku-webhook")
        self.threads = threads
        self.in_flight: dict[Future[Outcome], Due] = {}
        self.observe = observe  # (outcome, seconds from recorded to delivered), for metrics

    def step(self) -> int:
        """Record what finished and start what is due; how many attempts finished."""
        finished = [f for f in self.in_flight if f.done()]
        outcomes = []
        for future in finished:
            due = self.in_flight.pop(future)
            try:
                outcomes.append(future.result())
            except Exception:  # a bug in sending: the delivery is tried again later
                log.exception("webhook delivery %s failed to run", due.message_id)
        self._record(outcomes)
        self._start()
        return len(outcomes)

    def wait(self, timeout: float) -> None:
        """Until an attempt ends (or ``timeout``), then a moment more for those close behind,
        so that one transaction records many attempts."""
        if self.in_flight:
            done, _ = wait(list(self.in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
            if done:
                wait(list(self.in_flight), timeout=GATHER_SECONDS)
        else:
            time.sleep(timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.step()  # what finished is recorded; what was cancelled is sent again later
        self.sender.close()

    def _record(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        self.outbox.record(outcomes)
        for outcome in outcomes:
            if self.observe is not None:
                self.observe(outcome, self.now())
        for endpoint_id in {o.endpoint_id for o in outcomes if o.status == 410}:
            self.webhooks.disable(endpoint_id, "the endpoint answered 410 Gone")
        failing = {o.endpoint_id for o in outcomes if o.state != DELIVERED}
        for endpoint_id in failing:
            since = self.outbox.failing_since(endpoint_id)
            if since is not None and self.now() - since >= GIVE_UP_ENDPOINT_SECONDS:
                started = datetime.fromtimestamp(since, UTC).isoformat()
                self.webhooks.disable(endpoint_id, f"every delivery failed since {started}")

    def _start(self) -> None:
        room = self.threads - len(self.in_flight)
        if room <= 0:
            return
        busy_members = {(d.endpoint_id, d.member_id) for d in self.in_flight.values()}
        per_endpoint: dict[str, int] = {}
        for d in self.in_flight.values():
            per_endpoint[d.endpoint_id] = per_endpoint.get(d.endpoint_id, 0) + 1
        now_dt = self.webhooks.ledger.clock.now()  # a rotation ends in ledger time
        for due in self.outbox.due(self.now(), room + len(self.in_flight)):
            if (due.endpoint_id, due.member_id) in busy_members:
                continue
            if per_endpoint.get(due.endpoint_id, 0) >= self.per_endpoint:
                continue
            signing = self.webhooks.signing(due.endpoint_id, now_dt)
            if signing is None or not signing.enabled or not signing.secrets:
                continue  # removed or disabled: the dispatcher pauses or cancels it
            busy_members.add((due.endpoint_id, due.member_id))
            per_endpoint[due.endpoint_id] = per_endpoint.get(due.endpoint_id, 0) + 1
            future = self.pool.submit(self._send, due, signing.url, signing.secrets)
            self.in_flight[future] = due
            if len(self.in_flight) >= self.threads:
                break

    def _send(self, due: Due, url: str, secrets: list[str]) -> Outcome:
        sent_at = datetime.now(UTC)
        signature = sign(secrets, due.message_id, sent_at, due.body)
        attempt = self.sender.send(url, due.message_id, sent_at, due.body, signature)
        now = self.now()
        tries = due.tries + 1
        if attempt.ok:
            state, retry_at = DELIVERED, None
        else:
            retry_at = next_attempt(tries, attempt, now)
            state = PENDING if retry_at is not None else FAILED
        return Outcome(
            due.endpoint_id,
            due.position,
            due.attempts + 1,
            now,
            attempt.status,
            attempt.latency_ms,
            attempt.excerpt,
            attempt.error,
            state,
            retry_at,
            due.recorded_at,
        )


def prune(webhooks: Webhooks, retention_days: int, now: datetime, most: int = PRUNE_MOST) -> int:
    """Forget the finished deliveries (and attempts) of events recorded more than
    ``retention_days`` before ``now``, at most ``most``; how many. A replay from before then
    queues them again."""
    before = webhooks.position_before(now - timedelta(days=retention_days)) + 1
    pruned = 0
    for endpoint_id in [e.endpoint_id for e in webhooks.outbox.endpoints()]:
        while pruned < most:
            done = webhooks.outbox.prune(endpoint_id, before, min(PRUNE_PAGE, most - pruned))
            pruned += done
            if done < PRUNE_PAGE:
                break
    return pruned


def open_webhook_thread(
    ledger: Ledger,
    database: Database,
    allow_private: bool,
    observe: Callable[[Outcome, float], None] | None = None,
    retention_days: int = RETENTION_DAYS,
) -> WebhookThread:
    """The dispatcher of the database ``ledger`` is on, with an outbox of its own (closed
    with the thread by ``stop``); not yet started."""
    outbox = Outbox.open(database)
    return WebhookThread(
        ledger,
        outbox,
        Webhooks(ledger, outbox, allow_private),
        Sender(allow_private=allow_private),
        observe=observe,
        owns_outbox=True,
        retention_days=retention_days,
    )


class WebhookThread(BackgroundLoop):
    """The dispatcher and the deliverer in one daemon thread (``daifuku webhooks``, and
    ``daifuku serve``'s background work). A failed pass is logged and tried again."""

    thread_name = "daifuku-webhooks"

    def __init__(
        self,
        ledger: Ledger,
        outbox: Outbox,
        webhooks: Webhooks,
        sender: Sender,
        poll_seconds: float = POLL_SECONDS,
        observe: Callable[[Outcome, float], None] | None = None,
        owns_outbox: bool = False,
        retention_days: int = RETENTION_DAYS,
    ) -> None:
        self.retention_days = retention_days
        self.ledger = ledger
        self.outbox = outbox
        self.owns_outbox = owns_outbox
        self.webhooks = webhooks
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.observe = observe
        self.dispatcher: Dispatcher | None = None
        self.passed = threading.Event()  # set after each pass (tests wait on it)
        super().__init__()

    def _run(self) -> None:
        deliverer = Deliverer(self.outbox, self.webhooks, self.sender, observe=self.observe)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        renewed = 0.0
        next_look = 0.0  # when the dispatcher reads the log next
        next_prune = time.monotonic() + 60.0  # first, once the dispatcher has caught up
        try:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() - renewed >= LEASE_RENEW_SECONDS:
                        if not self.outbox.take_lease(holder, LEASE_SECONDS, time.time()):
                            # Another dispatcher works: wait for its lease to end (it stopped
                            # or died), then start from what it recorded.
                            self.dispatcher = None
                            self._stopping.wait(LEASE_RENEW_SECONDS)
                            continue
                        renewed = time.monotonic()
                    if self.dispatcher is None:
                        self.dispatcher = Dispatcher(self.ledger, self.outbox)
                        next_look = 0.0
                    behind = False
                    if time.monotonic() >= next_look:
                        read = self.dispatcher.catch_up() + self.dispatcher.replay_step()
                        behind = read >= self.dispatcher.page
                        if not behind:  # caught up: read the log again in a poll's time
                            next_look = time.monotonic() + self.poll_seconds
                    deliverer.step()
                    if time.monotonic() >= next_prune:
                        pruned = prune(self.webhooks, self.retention_days, self.ledger.clock.now())
                        # More left: again in a minute, between the dispatcher's own work.
                        wait = 60.0 if pruned >= PRUNE_MOST else PRUNE_EVERY_SECONDS
                        next_prune = time.monotonic() + wait
                except Exception:
                    log.exception("webhook pass failed; trying again from the outbox")
                    self.dispatcher = None  # start again from the recorded position
                    self._stopping.wait(1.0)
                    continue
                self.passed.set()
                if not behind:
                    # Until an attempt ends or it is time to look at the log again: the log is
                    # read once a poll, so each read and its transaction carry many events.
                    deliverer.wait(max(next_look - time.monotonic(), 0.001))
        finally:
            deliverer.close()
            with contextlib.suppress(Exception):  # the next dispatcher need not wait for it
                self.outbox.release_lease(holder)
            if self.owns_outbox:
                self.outbox.close()
