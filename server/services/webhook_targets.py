"""Which URLs a webhook may be sent to.

http and https only, no ``user:password@`` (the signature authenticates us; credentials in a URL end up in
logs), no fragment. In production the host must not be, or resolve to, a loopback, link-local (cloud metadata
at 169.254.169.254), unspecified or multicast address unless ``webhook_allow_local_targets`` says so: an admin
token must not become a way to make the server POST to itself. Private ranges (10/8, 192.168/16, ...) are
allowed: that is where hospital systems live. The check runs when a subscription is made and again before
every attempt (the name may resolve elsewhere by then); a name re-pointed between that check and the
connection (DNS rebinding) is not caught — see docs/webhooks.md.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000


class UnsafeTarget(ValueError):
    """A URL webhooks may not be sent to (the message says why, without the URL's query)."""


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The host itself when it is an address literal, else what it resolves to now (empty when it does not)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # an unresolvable name is refused by the connection, and retried: DNS may come back
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_target(url: str, *, allow_local: bool) -> str:
    """``url`` if webhooks may be sent there, else :class:`UnsafeTarget`."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("the URL must start with http:// or https://")
    if not host:
        raise UnsafeTarget("the URL has no host")
    if "@" in parts.netloc:
        raise UnsafeTarget("the URL must not hold credentials (user:password@): requests are signed instead")
    if parts.fragment or url.endswith("#"):
        raise UnsafeTarget("the URL must not have a #fragment")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeTarget("the URL must not contain spaces or control characters")
    if not allow_local:
        if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
            raise UnsafeTarget("loopback targets are refused in production (WARDWATCH_WEBHOOK_ALLOW_LOCAL_TARGETS)")
        for address in _addresses(host):
            if _refused(address):
                raise UnsafeTarget(f"{host} is a loopback, link-local, unspecified or multicast address; refused "
                                   "in production (WARDWATCH_WEBHOOK_ALLOW_LOCAL_TARGETS)")
    return url
