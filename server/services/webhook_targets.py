"""Which URLs a webhook may be sent to, and which addresses its sender may connect to.

The URL: http and https only, no ``user:password@`` (the signature authenticates us; credentials in a URL end up
in logs), no fragment, no spaces or control characters.

The addresses: the stream destination policy (``ingest.destinations``: one table of special addresses and one
implementation of the checks for both). The host is resolved and **every** address is checked; loopback,
link-local (cloud metadata at 169.254.169.254), the other known metadata addresses (100.100.100.200,
fd00:ec2::254), unspecified, multicast and reserved addresses (which hold the IPv4-compatible and NAT64 forms
of the others, ``[::127.0.0.1]``, ``[64:ff9b::a9fe:a9fe]``) are refused in production unless
``webhook_allow_local_targets`` says so: an admin must not be able to make the server POST to itself or to the
metadata service. Private ranges (10/8, 192.168/16, ...) are allowed: that is where hospital systems live. A name
that does not resolve is refused at creation (it could not be checked).

The check runs when a subscription is made and again on every attempt, at the connection itself: the sender
connects to the addresses this module has just checked (``allowed_addresses``), never to a second look-up of
the name, so a name re-pointed at a forbidden address (DNS rebinding) is refused at the next attempt.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ingest.destinations import DestinationPolicy, IPAddress
from ingest.errors import DestinationRefused, DestinationUnresolved

MAX_URL_LENGTH = 2000
SCHEMES = ("http", "https")
_HINT = "refused in production (WARDWATCH_WEBHOOK_ALLOW_LOCAL_TARGETS)"


class UnsafeTarget(ValueError):
    """A URL webhooks may not be sent to (the message says why, without the URL's query)."""


class UnresolvedTarget(UnsafeTarget):
    """The host name does not resolve now: refused at creation; at an attempt, retried (DNS may come back)."""


def _policy(allow_local: bool) -> DestinationPolicy:
    return DestinationPolicy(schemes=SCHEMES, kind="webhook", allow_special=allow_local, special_hint=_HINT,
                             allow_list_name="WARDWATCH_WEBHOOK_ALLOW_LOCAL_TARGETS")


def allowed_addresses(host: str, *, allow_local: bool) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to now, all of them allowed: what the sender may connect to. Raises
    :class:`UnsafeTarget` (:class:`UnresolvedTarget` when the name does not resolve)."""
    if not allow_local and (host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost")):
        raise UnsafeTarget(f"loopback targets are {_HINT}")
    try:
        return _policy(allow_local).check_host(host)
    except DestinationUnresolved as exc:
        raise UnresolvedTarget(str(exc)) from exc
    except DestinationRefused as exc:
        raise UnsafeTarget(str(exc)) from exc


def check_url(url: str) -> str:
    """``url`` if its form is one webhooks may use (scheme, no credentials, ...), else :class:`UnsafeTarget`;
    returns its host. No look-up."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise UnsafeTarget("the URL must start with http:// or https://")
    if not host:
        raise UnsafeTarget("the URL has no host")
    if "@" in parts.netloc:
        raise UnsafeTarget("the URL must not hold credentials (user:password@): requests are signed instead")
    if parts.fragment or url.endswith("#"):
        raise UnsafeTarget("the URL must not have a #fragment")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeTarget("the URL must not contain spaces or control characters")
    return host


def check_target(url: str, *, allow_local: bool) -> str:
    """``url`` if webhooks may be sent there now (its form, and every address its host resolves to), else
    :class:`UnsafeTarget`."""
    allowed_addresses(check_url(url), allow_local=allow_local)
    return url
