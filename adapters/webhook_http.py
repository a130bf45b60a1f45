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
import http.client
import math
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from secrets import token_bytes
from urllib.parse import urlsplit

from standardwebhooks import Webhook

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
    """Where a URL's messages go: the address connected to (the one checked, unless private
    endpoints are allowed), and what the request names."""

    scheme: str
    host: str
    address: str
    port: int
    request_uri: str
    host_header: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.scheme, self.host, self.address, self.port


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the address that was checked, with the certificate verified for the host name."""

    def __init__(self, target: _Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.address, target.port, timeout=timeout, context=context)
        self._server_name = target.host
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)


class Sender:
    """Posts messages over pooled keep-alive connections; safe to share between threads.

    Built on the standard library's ``http.client`` with a small pool of idle connections per
    endpoint: it spends half the CPU of urllib3's pool per message (231-240 us against 466-577
    us, to a loopback receiver, 2026-12-01), and sending is most of what the dispatcher does.
    ``http.client`` follows no redirect and reads no more of a body than asked.

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
        self._timeout = timeout
        self._tls = ssl.create_default_context(cafile=ca_certs)
        self._idle: OrderedDict[tuple[str, str, str, int], list[http.client.HTTPConnection]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

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
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(_utc(timestamp).timestamp())),
            "webhook-signature": signature,
        }
        payload = body.encode()
        for reused in (True, False):
            connection = self._connection(target, reused)
            if connection is None:
                continue
            try:
                connection.request("POST", target.request_uri, body=payload, headers=headers)
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                connection.close()
                if reused:  # a kept connection the receiver had closed: once more, afresh
                    continue
                return Attempt(None, _since(started), error=f"connection broken: {e}")
            except (OSError, http.client.HTTPException) as failed:
                connection.close()
                return Attempt(None, _since(started), error=_describe(failed, target))
            return self._answer(connection, response, target, started)
        raise AssertionError("unreachable: the second pass always connects")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, OrderedDict()
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _answer(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        target: _Target,
        started: float,
    ) -> Attempt:
        error = None
        try:
            excerpt = response.read(EXCERPT_BYTES)
        except (OSError, http.client.HTTPException) as failed:
            excerpt, error = b"", f"reading the response: {_describe(failed, target)}"
        if response.isclosed() and not response.will_close and error is None:
            self._keep(target, connection)
        else:  # unread body, or the receiver closes: it cannot carry the next message
            connection.close()
        retry_after = None
        if response.status in RETRY_AFTER_STATUSES:
            asked = response.getheader("retry-after")
            retry_after = retry_after_seconds(asked, self._clock.now())
        return Attempt(
            status=response.status,
            latency_ms=_since(started),
            excerpt=excerpt.decode("utf-8", errors="replace"),
            error=error,
            retry_after=retry_after,
        )

    def _connection(self, target: _Target, reused: bool) -> http.client.HTTPConnection | None:
        if reused:
            with self._lock:
                kept = self._idle.get(target.key)
                return kept.pop() if kept else None
        if target.scheme == "https":
            return _CheckedHTTPSConnection(target, self._timeout, self._tls)
        return http.client.HTTPConnection(target.address, target.port, timeout=self._timeout)

    def _keep(self, target: _Target, connection: http.client.HTTPConnection) -> None:
        """Keep an idle connection for the endpoint's next message (a few per endpoint, for
        the endpoints used last); close what is not kept."""
        closing = []
        with self._lock:
            kept = self._idle.setdefault(target.key, [])
            self._idle.move_to_end(target.key)
            if len(kept) < CONNECTIONS_PER_HOST:
                kept.append(connection)
            else:
                closing.append(connection)
            while len(self._idle) > HOSTS_KEPT:
                closing.extend(self._idle.popitem(last=False)[1])
        for extra in closing:
            extra.close()

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        if scheme not in DEFAULT_PORTS or not host:
            raise ValueError(f"{url!r} is not an absolute http(s) URL")
        port = parts.port or DEFAULT_PORTS[scheme]
        request_uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        address = host if self.allow_private else public_addresses(host, port)[0]
        return _Target(scheme, host, address, port, request_uri, parts.netloc.rpartition("@")[2])


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


def _describe(failed: BaseException, target: _Target) -> str:
    if isinstance(failed, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(failed, ConnectionRefusedError):
        return f"connection refused: {target.address}:{target.port}"
    if isinstance(failed, ssl.SSLError | ssl.CertificateError):
        return f"TLS error: {failed}"
    if isinstance(failed, socket.gaierror):
        return f"host does not resolve: {failed}"
    if isinstance(failed, http.client.HTTPException):
        return f"connection broken: {failed!r}"
    return f"connection failed: {failed}"


def _utc(timestamp: datetime) -> datetime:
    if timestamp.tzinfo is None:
        raise ValueError("a webhook timestamp must be timezone-aware")
    return timestamp.astimezone(UTC)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
