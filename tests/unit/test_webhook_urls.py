"""Which endpoint URLs are refused, and why: the guard against server-side request forgery.

Names are resolved by a fake resolver (only `localhost` and IP literals reach the real one, which
answers them without DNS), so these tests never depend on the network.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from adapters.webhook_urls import RefusedAddress, check_url, public_addresses

REAL_GETADDRINFO = socket.getaddrinfo
PUBLIC = "93.184.216.34"


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host names the fake resolver knows, and the addresses it answers for each."""
    known: dict[str, list[str]] = {"hooks.shop.example": [PUBLIC]}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host in known:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (address, port),
                )
                for address in known[host]
            ]
        if host == "localhost":
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        try:
            return REAL_GETADDRINFO(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return known


def test_a_public_https_endpoint_is_accepted(names: dict[str, list[str]]) -> None:
    assert check_url("https://hooks.shop.example/daifuku?shop=7", allow_private=False) is None
    assert check_url(f"https://{PUBLIC}:8443/hook", allow_private=False) is None
    assert check_url("https://[2606:4700:4700::1111]/hook", allow_private=False) is None


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("[::1]", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.20", "a private address"),
        ("[fd00::7]", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("[fe80::1]", "a link-local address"),
        ("0.0.0.0", "the unspecified address"),
        ("[::]", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("[ff02::1]", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "not a public address"),
        ("[::ffff:127.0.0.1]", "a loopback address (127.0.0.1)"),
        ("[::ffff:192.168.0.1]", "a private address (192.168.0.1)"),
        ("[2002:7f00:1::]", "a loopback address (127.0.0.1)"),
        ("[64:ff9b::a00:1]", "a private address (10.0.0.1)"),
        ("2130706433", "a loopback address"),
    ],
)
def test_hosts_that_are_not_public_are_refused(
    names: dict[str, list[str]], host: str, kind: str
) -> None:
    problem = check_url(f"https://{host}/hook", allow_private=False)
    assert problem is not None
    assert kind in problem
    assert "DAIFUKU_WEBHOOKS_ALLOW_PRIVATE=1" in problem


def test_a_mapped_ipv6_address_is_judged_by_its_ipv4_address(names: dict[str, list[str]]) -> None:
    assert check_url(f"https://[::ffff:{PUBLIC}]/hook", allow_private=False) is None


def test_localhost_is_refused_for_what_it_resolves_to(names: dict[str, list[str]]) -> None:
    problem = check_url("https://localhost:8443/hook", allow_private=False)
    assert problem is not None
    assert "host 'localhost' resolves to 127.0.0.1, which is a loopback address" in problem


def test_a_name_resolving_to_a_private_address_is_refused(names: dict[str, list[str]]) -> None:
    names["intranet.shop.example"] = ["10.0.0.5"]
    problem = check_url("https://intranet.shop.example/hook", allow_private=False)
    assert problem is not None
    assert "resolves to 10.0.0.5, which is a private address" in problem


def test_one_private_answer_among_public_ones_is_enough_to_refuse(
    names: dict[str, list[str]],
) -> None:
    names["mixed.shop.example"] = [PUBLIC, "192.168.7.7"]
    problem = check_url("https://mixed.shop.example/hook", allow_private=False)
    assert problem is not None
    assert "192.168.7.7" in problem


def test_a_host_that_does_not_resolve_is_refused(names: dict[str, list[str]]) -> None:
    problem = check_url("https://gone.shop.example/hook", allow_private=False)
    assert problem is not None
    assert "host 'gone.shop.example' does not resolve" in problem


def test_https_is_required_unless_private_endpoints_are_allowed(
    names: dict[str, list[str]],
) -> None:
    problem = check_url("http://hooks.shop.example/hook", allow_private=False)
    assert problem is not None
    assert "must use https://" in problem
    assert check_url("http://hooks.shop.example/hook", allow_private=True) is None


def test_allowing_private_endpoints_allows_plain_http_to_loopback(
    names: dict[str, list[str]],
) -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True) is None
    assert check_url("http://localhost:8080/hook", allow_private=True) is None
    assert check_url("https://10.0.0.5/hook", allow_private=True) is None


@pytest.mark.parametrize("allow_private", [False, True])
def test_credentials_in_the_url_are_refused(
    names: dict[str, list[str]], allow_private: bool
) -> None:
    for url in ("https://shop:s3cret@hooks.shop.example/", "https://shop@hooks.shop.example/"):
        problem = check_url(url, allow_private=allow_private)
        assert problem is not None
        assert "user name or password" in problem


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("hooks.shop.example/hook", "absolute http:// or https:// URL"),
        ("/hook", "absolute http:// or https:// URL"),
        ("ftp://hooks.shop.example/hook", "absolute http:// or https:// URL"),
        ("https:///hook", "absolute http:// or https:// URL"),
        ("https://:443/hook", "has no host"),
        ("https://hooks.shop.example:99999/", "not a valid URL"),
        ("https://[::1/hook", "not a valid URL"),
        ("https://hooks.shop.example/a b", "spaces or control characters"),
        ("https://hooks.shop.example/\nHost: evil", "spaces or control characters"),
    ],
)
def test_malformed_urls_are_refused_in_words(
    names: dict[str, list[str]], url: str, words: str
) -> None:
    problem = check_url(url, allow_private=True)
    assert problem is not None
    assert words in problem


def test_a_url_longer_than_2048_characters_is_refused(names: dict[str, list[str]]) -> None:
    base = "https://hooks.shop.example/"
    longest = base + "a" * (2048 - len(base))
    assert check_url(longest, allow_private=False) is None
    problem = check_url(longest + "a", allow_private=False)
    assert problem == "url is 2049 characters long; at most 2048 are allowed"


def test_public_addresses_lists_each_address_once_in_the_resolvers_order(
    names: dict[str, list[str]],
) -> None:
    names["pair.shop.example"] = ["2606:4700:4700::1111", PUBLIC, PUBLIC]
    assert public_addresses("pair.shop.example", 443) == ["2606:4700:4700::1111", PUBLIC]
    with pytest.raises(RefusedAddress, match="loopback"):
        public_addresses("localhost", 443)
