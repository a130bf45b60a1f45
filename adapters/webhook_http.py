"""Posting one webhook message over HTTP, and what came of it.

Messages follow Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature`
headers, signed by the `standardwebhooks` package so any receiver's library verifies them. The
sender never raises for what the network or the receiver did: every outcome is an `Attempt` the
dispatcher records and schedules from. Redirects are not followed and only the first
`EXCERPT_BYTES` of a response are read, so a receiver can neither send us elsewhere nor make us
download much.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from secrets import token_bytes
from urllib.parse import urlsplit

import urllib3
from standardwebhooks import Webhook
from urllib3.exceptions import (
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as HTTPTimeout

from adapters.webhook_urls import DEFAULT_PORTS, RefusedAddress, public_addresses
from domain.clock import Clock, SystemClock

EXCERPT_BYTES = 1024
DELIVERY_TIMEOUT_SECONDS = 15.0
USER_AGENT = "Daifuku-Webhooks/1"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Keep-alive connections kept per endpoint host, and endpoint hosts kept connected.
CONNECTIONS_PER_HOST = 16  # as many as the deliverer sends to one endpoint at once
HOSTS_KEPT = 64
RETRY_AFTER_STATUSES = frozenset({429, 503})


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form, shown to the operator once."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def sign(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,` signature per secret (two during a rotation)."""
    if not secrets:
        raise ValueError("a message needs at least one secret to be signed with")
    when = _utc(timestamp)
    return " ".join(Webhook(secret).sign(msg_id, when, body) for secret in secrets)


@dataclass(frozen=True)
class Attempt:
    """One try at delivering a message: what the receiver answered, or why it could not."""

    status: int | None
    latency_ms: float
    excerpt: str = ""
    error: str | None = None
    # Seconds the receiver asked us to wait, from Retry-After on a 429 or 503.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer is delivery; the status alone decides, as Standard Webhooks says."""
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Target:
    pool: urllib3.HTTPConnectionPool
    request_uri: str
    host_header: str


class Sender:
    """Posts messages over pooled keep-alive connections; safe to share between threads.

    With `allow_private` False the endpoint's host is resolved and checked again at every
    delivery and the connection goes to the address that was checked (TLS still verifies the
    certificate against the host name), so a host that now resolves to a private address is
    refused without a request being sent.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
        clock: Clock | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._clock: Clock = clock or SystemClock()
        self._pools = urllib3.PoolManager(
            num_pools=HOSTS_KEPT,
            maxsize=CONNECTIONS_PER_HOST,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(total=timeout),
            ca_certs=ca_certs,
        )

    def send(
        self, url: str, msg_id: str, timestamp: datetime, body: str, signature: str
    ) -> Attempt:
        """Post `body` to `url` once; never raises for the network or the receiver."""
        started = time.perf_counter()
        try:
            target = self._target(url)
        except RefusedAddress as refused:
            return Attempt(None, _since(started), error=f"refused address: {refused}")
        except ValueError as invalid:
            return Attempt(None, _since(started), error=f"invalid url: {invalid}")
        headers = {
            "host": target.host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(_utc(timestamp).timestamp())),
            "webhook-signature": signature,
        }
        try:
            response = target.pool.urlopen(
                "POST",
                target.request_uri,
                body=body.encode(),
                headers=headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
            )
        except HTTPError as failed:
            return Attempt(None, _since(started), error=_describe(failed))
        error = None
        try:
            excerpt = response.read(EXCERPT_BYTES)
        except HTTPError as failed:
            excerpt, error = b"", f"reading the response: {_describe(failed)}"
        finally:
            if not response.closed:
                # Unread body left on the connection: it cannot carry the next message.
                response.close()
            response.release_conn()
        retry_after = None
        if response.status in RETRY_AFTER_STATUSES:
            asked = response.headers.get("retry-after")
            retry_after = retry_after_seconds(asked, self._clock.now())
        return Attempt(
            status=response.status,
            latency_ms=_since(started),
            excerpt=excerpt.decode("utf-8", errors="replace"),
            error=error,
            retry_after=retry_after,
        )

    def close(self) -> None:
        self._pools.clear()

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        if scheme not in DEFAULT_PORTS or not host:
            raise ValueError(f"{url!r} is not an absolute http(s) URL")
        port = parts.port or DEFAULT_PORTS[scheme]
        request_uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self.allow_private:
            pool = self._pools.connection_from_host(host, port, scheme)
        else:
            address = public_addresses(host, port)[0]
            name = {"server_hostname": host, "assert_hostname": host} if scheme == "https" else {}
            pool = self._pools.connection_from_host(address, port, scheme, pool_kwargs=name)
        return _Target(pool, request_uri, host_header=parts.netloc.rpartition("@")[2])


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from `now`: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _describe(failed: HTTPError) -> str:
    if isinstance(failed, NameResolutionError):
        return f"host does not resolve: {failed.__cause__ or failed}"
    if isinstance(failed, NewConnectionError):
        cause = failed.__cause__
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused: {failed.conn.host}:{failed.conn.port}"
        return f"connection failed: {cause or failed}"
    if isinstance(failed, HTTPTimeout):
        return "timeout"
    if isinstance(failed, SSLError):
        return f"TLS error: {failed.__cause__ or failed}"
    if isinstance(failed, ProtocolError):
        return f"connection broken: {failed.__cause__ or failed}"
    return str(failed)


def _utc(timestamp: datetime) -> datetime:
    if timestamp.tzinfo is None:
        raise ValueError("a webhook timestamp must be timezone-aware")
    return timestamp.astimezone(UTC)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
