"""Which webhook URLs Daifuku will post to: the guard against server-side request forgery.

An operator's URL makes the server open a connection, so a URL that names (or resolves to) a
loopback, link-local or private address would let anyone who may subscribe reach the server's own
network. Such hosts are refused unless private endpoints are allowed explicitly (development and
tests). The decision is made on the addresses a name resolves to, not on how the URL spells its
host, so `http://2130706433/` and a name pointing at 10.0.0.5 are caught like `127.0.0.1`. The
sender asks again at delivery and connects to the address it checked, so a name that resolves
differently later (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
ALLOW_PRIVATE_HINT = "allowed only with DAIFUKU_WEBHOOKS_ALLOW_PRIVATE=1"
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedAddress(Exception):
    """The host does not resolve, or resolves to an address Daifuku must not post to."""


def check_url(url: str, allow_private: bool) -> str | None:
    """None when Daifuku may post to `url`, else why not, in words for a problem detail."""
    if len(url) > MAX_URL_LENGTH:
        return f"url is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "url must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as invalid:
        return f"url is not a valid URL: {invalid}"
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return "url must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "url has no host"
    if parts.username is not None or parts.password is not None:
        return "url must not carry a user name or password (user:pass@); messages are signed"
    if allow_private:
        return None
    if parts.scheme != "https":
        return f"url must use https:// (plain http:// is {ALLOW_PRIVATE_HINT})"
    try:
        public_addresses(parts.hostname, port or DEFAULT_PORTS[parts.scheme])
    except RefusedAddress as refused:
        return str(refused)
    return None


def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, all of them public.

    Raises RefusedAddress when the host does not resolve or any address is not public: one
    private answer is enough to refuse, since the connection could land on any of them.
    """
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as unresolved:
        why = getattr(unresolved, "strerror", None) or str(unresolved)
        raise RefusedAddress(f"host {host!r} does not resolve ({why})") from unresolved
    addresses = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
    if not addresses:
        raise RefusedAddress(f"host {host!r} does not resolve (no address)")
    for address in addresses:
        reason = address_refusal(ipaddress.ip_address(address))
        if reason is not None:
            resolves = "is" if address == host else f"resolves to {address}, which is"
            raise RefusedAddress(
                f"host {host!r} {resolves} {reason}; such endpoints are {ALLOW_PRIVATE_HINT}"
            )
    return addresses


def address_refusal(address: IPAddress) -> str | None:
    """None for a globally reachable address, else what kind of address it is."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    # A mapped address is its IPv4 address on the wire; its IPv6 form is never global.
    destinations = [mapped] if mapped is not None else [address, *_embedded_ipv4(address)]
    for candidate in destinations:
        # Python counts multicast groups as global; they are not endpoints either.
        if not candidate.is_global or candidate.is_multicast:
            within = "" if candidate == address else f" ({candidate})"
            return f"{_kind(candidate)}{within}"
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 destinations that 6to4 and NAT64 addresses stand for (Teredo is never global)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    embedded = [address.sixtofour] if address.sixtofour is not None else []
    if address in NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def _kind(address: IPAddress) -> str:
    kinds = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
    )
    return next((name for applies, name in kinds if applies), "not a public address")
