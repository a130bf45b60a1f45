"""Posting one message to a real receiver on loopback: signatures, answers, limits, failures."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters import webhook_urls
from adapters.webhook_http import EXCERPT_BYTES, USER_AGENT, Sender, new_secret, sign
from domain.clock import FixedClock
from tests.receiver import Receiver, Reply

BODY = '{"type":"tier.upgraded","timestamp":"2026-03-01T09:00:00Z","data":{"tier":"gold"}}'
SHOP_HOST = "hooks.shop.example"
REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def sender() -> Iterator[Sender]:
    sending = Sender(allow_private=True)
    yield sending
    sending.close()


def post(sender: Sender, url: str, msg_id: str = "msg_1") -> Any:
    now = datetime.now(UTC)
    return sender.send(url, msg_id, now, BODY, sign([new_secret()], msg_id, now, BODY))


def test_each_of_two_secrets_verifies_the_message(receiver: Receiver, sender: Sender) -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)
    attempt = sender.send(
        receiver.url + "/hooks", "msg_7", now, BODY, sign([old, new], "msg_7", now, BODY)
    )
    assert attempt.ok
    (request,) = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(request.body, request.headers) == {
            "type": "tier.upgraded",
            "timestamp": "2026-03-01T09:00:00Z",
            "data": {"tier": "gold"},
        }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


def test_the_message_carries_the_standard_webhooks_headers(
    receiver: Receiver, sender: Sender
) -> None:
    when = datetime(2026, 3, 1, 18, 0, 30, 750000, tzinfo=timezone(timedelta(hours=9)))
    sender.send(receiver.url + "/hooks?shop=7", "msg_9", when, BODY, "v1,c2lnbmF0dXJl")
    (request,) = receiver.wait_for(1)
    assert (request.method, request.path, request.body) == ("POST", "/hooks?shop=7", BODY.encode())
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["webhook-id"] == "msg_9"
    assert request.headers["webhook-timestamp"] == str(int(when.timestamp())) == "1772355630"
    assert request.headers["webhook-signature"] == "v1,c2lnbmF0dXJl"


def test_a_timestamp_in_another_zone_signs_the_same_instant() -> None:
    secret = new_secret()
    utc = datetime(2026, 3, 1, 9, 0, 30, tzinfo=UTC)
    tokyo = utc.astimezone(timezone(timedelta(hours=9)))
    assert sign([secret], "msg_1", tokyo, BODY) == sign([secret], "msg_1", utc, BODY)
    with pytest.raises(ValueError, match="timezone-aware"):
        sign([secret], "msg_1", utc.replace(tzinfo=None), BODY)
    with pytest.raises(ValueError, match="at least one secret"):
        sign([], "msg_1", utc, BODY)


def test_a_new_secret_is_a_random_whsec_key() -> None:
    import base64

    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_a_2xx_answer_is_a_delivery(receiver: Receiver, sender: Sender) -> None:
    receiver.respond(Reply(204), Reply(200, body=b'{"received": true}'))
    first, second = post(sender, receiver.url), post(sender, receiver.url)
    assert (first.ok, first.status, first.error) == (True, 204, None)
    assert (second.ok, second.excerpt) == (True, '{"received": true}')
    assert first.latency_ms > 0


def test_a_500_is_not_a_delivery_and_keeps_what_the_receiver_said(
    receiver: Receiver, sender: Sender
) -> None:
    receiver.respond(Reply(500, body=b"database unavailable \xff"))
    attempt = post(sender, receiver.url)
    assert (attempt.ok, attempt.status, attempt.error) == (False, 500, None)
    assert attempt.excerpt == "database unavailable \ufffd"


def test_only_the_first_kilobyte_of_a_large_answer_is_read(
    receiver: Receiver, sender: Sender
) -> None:
    receiver.respond(Reply(200, body=b"x" * 1_000_000))
    attempt = post(sender, receiver.url)
    assert attempt.ok
    assert attempt.excerpt == "x" * EXCERPT_BYTES
    # The unread rest cannot be mistaken for the next answer on a reused connection.
    receiver.respond(Reply(202, body=b"next"))
    assert (post(sender, receiver.url).status, post(sender, receiver.url).status) == (202, 200)


def test_a_redirect_is_not_followed(receiver: Receiver, sender: Sender) -> None:
    receiver.respond(Reply(302, headers={"Location": receiver.url + "/elsewhere"}))
    attempt = post(sender, receiver.url + "/hooks")
    assert (attempt.ok, attempt.status) == (False, 302)
    assert [request.path for request in receiver.received] == ["/hooks"]


def test_a_receiver_slower_than_the_timeout_is_a_timeout(receiver: Receiver) -> None:
    impatient = Sender(allow_private=True, timeout=0.3)
    receiver.respond(Reply(200, delay=2.0))
    attempt = post(impatient, receiver.url)
    impatient.close()
    assert (attempt.ok, attempt.status, attempt.error) == (False, None, "timeout")
    assert 300 <= attempt.latency_ms < 1900


def test_a_closed_port_is_a_refused_connection(sender: Sender) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = post(sender, f"http://127.0.0.1:{port}/hooks")
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error == f"connection refused: 127.0.0.1:{port}"


def test_a_malformed_url_is_an_attempt_not_an_exception(sender: Sender) -> None:
    for url in ("ftp://hooks.shop.example/", "https:///hooks", "http://127.0.0.1:99999/"):
        attempt = post(sender, url)
        assert (attempt.ok, attempt.status) == (False, None)
        assert attempt.error is not None and attempt.error.startswith("invalid url")


def test_retry_after_in_seconds_is_kept_on_429(receiver: Receiver, sender: Sender) -> None:
    receiver.respond(
        Reply(429, headers={"Retry-After": "120"}), Reply(500, headers={"Retry-After": "9"})
    )
    assert post(sender, receiver.url).retry_after == 120.0
    assert post(sender, receiver.url).retry_after is None


def test_retry_after_as_an_http_date_counts_from_the_clock(receiver: Receiver) -> None:
    now = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
    sender = Sender(allow_private=True, clock=FixedClock(now))
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    receiver.respond(
        Reply(503, headers={"Retry-After": later}), Reply(503, headers={"Retry-After": earlier})
    )
    assert post(sender, receiver.url).retry_after == 90.0
    assert post(sender, receiver.url).retry_after == 0.0
    sender.close()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shop's host name resolves to loopback; the list records every name looked up."""
    looked_up: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        looked_up.append(host)
        if host == SHOP_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_a_host_now_resolving_to_loopback_is_refused_at_delivery(
    receiver: Receiver, resolver: list[str]
) -> None:
    guarded = Sender(allow_private=False)
    attempt = post(guarded, f"http://{SHOP_HOST}:{receiver.port}/hooks")
    guarded.close()
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error is not None
    assert attempt.error.startswith(
        f"refused address: host '{SHOP_HOST}' resolves to 127.0.0.1, which is a loopback address"
    )
    assert receiver.received == []


def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, resolver: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_urls, "address_refusal", lambda address: None)
    guarded = Sender(allow_private=False)
    url = f"http://{SHOP_HOST}:{receiver.port}/hooks"
    attempts = [post(guarded, url), post(guarded, url)]
    guarded.close()
    assert [attempt.ok for attempt in attempts] == [True, True]
    # Resolved once per delivery by the guard, never again by the HTTP client.
    assert resolver.count(SHOP_HOST) == 2
    assert [r.headers["host"] for r in receiver.received] == [f"{SHOP_HOST}:{receiver.port}"] * 2


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize(("served_name", "ok"), [(SHOP_HOST, True), ("other.example", False)])
def test_tls_to_the_checked_address_verifies_the_certificate_for_the_host_name(
    tmp_path: Path,
    resolver: list[str],
    monkeypatch: pytest.MonkeyPatch,
    served_name: str,
    ok: bool,
) -> None:
    monkeypatch.setattr(webhook_urls, "address_refusal", lambda address: None)
    cert_file, key_file = certificate(tmp_path, served_name)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    guarded = Sender(allow_private=False, ca_certs=str(cert_file), timeout=5)
    with Receiver(tls=tls) as secure:
        attempt = post(guarded, f"https://{SHOP_HOST}:{secure.port}/hooks")
    guarded.close()
    assert attempt.ok is ok
    if not ok:
        assert attempt.error is not None and attempt.error.startswith("TLS error")
