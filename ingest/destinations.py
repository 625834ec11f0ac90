"""Where a stream reader may connect: the guard against server-side request forgery through stream URLs.

A stream URL makes the server open a connection to whatever host it names. Without a check, anyone allowed to
start a stream can make the server call its own loopback services, the cloud metadata endpoint
(169.254.169.254), or any internal address, and retry for as long as the stream runs. The policy:

* only the schemes given (the server's default: rtsp, rtsps, rtmp, rtmps, http, https, tcp);
* the host name is resolved and **every** address (A and AAAA) is checked, not just the first: a name with one
  public and one loopback address is refused;
* loopback, link-local (which holds the metadata endpoint), unspecified, multicast, reserved and known cloud
  metadata addresses are refused unless the allow-list names a network *inside* that special range (an entry
  ``127.0.0.1/32`` allows the local camera relay; ``0.0.0.0/0`` allows no special address at all, and a
  host-name entry never unlocks one either);
* when the allow-list is not empty, a destination must also be listed: its host name matches a name entry
  (``cam1.ward.example`` or ``*.ward.example``), or every address lies in a network entry.

The check is per connection: the reader calls it again before every reconnect, so a name re-pointed at a
forbidden address (DNS rebinding) is refused at the next connection. FFmpeg resolves the name once more
itself when it connects, so a name whose owner answers differently within milliseconds can still slip
between the two look-ups: name only hosts whose DNS you trust, or list camera networks and use IP literals.

The same table and checks guard webhook targets (``server.services.webhook_targets``): a policy with another
``kind`` and schemes, whose :meth:`DestinationPolicy.check_host` gives the checked addresses the webhook sender
then connects to (no second look-up there).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ingest.errors import DestinationRefused, DestinationUnresolved
from ingest.stream_urls import validate_stream_url

__all__ = ["SAFE_SCHEMES", "DestinationPolicy", "IPAddress"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What a camera or relay speaks. Not ``udp``: an udp "stream" listens on a local port, it names no destination.
SAFE_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp")

# (network, what it is). Written out rather than taken from ``ipaddress``'s is_* flags, whose ranges changed
# between Python versions: this table is the policy. IPv4-mapped IPv6 addresses are checked as IPv4.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label) for net, label in (
        ("0.0.0.0/8", "unspecified"),  # 0.0.0.0 reaches this machine on Linux
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("100.100.100.200/32", "cloud metadata"),
        ("192.0.0.0/24", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # with 255.255.255.255, the broadcast address
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved"),  # site-local, deprecated
        ("fd00:ec2::254/128", "cloud metadata"),
        ("ff00::/8", "multicast"),
        ("::/8", "reserved"),  # IPv4-compatible and other reserved forms (IPv4-mapped ones are unwrapped first)
    )
)
_NAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9._:-]+$")


def _special(address: IPAddress) -> tuple[IPNetwork, str] | None:
    for network, label in _SPECIAL:
        if address.version == network.version and address in network:
            return network, label
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network(entry: str) -> IPNetwork | None:
    text = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        if "/" in text or text.replace(".", "").isdigit() or ":" in text:
            raise ValueError(f"stream allow-list entry {entry!r} is neither a network (CIDR) nor a host name") from None
        return None


@dataclass(frozen=True)
class DestinationPolicy:
    """Which stream destinations may be connected to (see the module docstring for the rules).

    Attributes:
        networks: allow-listed networks (``10.20.0.0/16``, ``127.0.0.1/32``, ``fd12::/64``).
        names: allow-listed host names, exact (``nvr.ward.example``) or a suffix (``*.ward.example``: any name
            below it, not the name itself), lower case.
        schemes: URL schemes accepted.
        allow_list_name: how messages call the allow-list (the server names its setting).
        kind: what the destinations are for, in messages ("stream", "webhook").
        allow_special: every special address passes too (webhooks in development, or when an operator says so);
            a name must still resolve, and the allow-list, if any, still applies.
        special_hint: how messages say a special address could be allowed (default: name a network inside it
            in the allow-list).
    """

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()
    schemes: tuple[str, ...] = SAFE_SCHEMES
    allow_list_name: str = "the stream allow-list"
    kind: str = "stream"
    allow_special: bool = False
    special_hint: str | None = None

    @classmethod
    def parse(cls, entries: Iterable[str], **kwargs: object) -> DestinationPolicy:
        """A policy from allow-list entries (CIDRs, addresses, host names, ``*.domain``); ValueError names a bad
        entry."""
        networks: list[IPNetwork] = []
        names: list[str] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            network = _network(entry)
            if network is not None:
                networks.append(network)
            elif _NAME.match(entry):
                names.append(entry)
            else:
                raise ValueError(f"stream allow-list entry {raw!r} is neither a network (CIDR) nor a host name "
                                 "(a wildcard is only '*.example.org')")
        return cls(networks=tuple(networks), names=tuple(names), **kwargs)  # type: ignore[arg-type]

    @property
    def restricted(self) -> bool:
        """An allow-list is configured: only listed destinations pass."""
        return bool(self.networks or self.names)

    def check(self, url: str) -> tuple[IPAddress, ...]:
        """The addresses ``url``'s host resolves to, all of them allowed; else raise.

        Raises:
            InvalidVideoError: the URL itself is refused (scheme, syntax; see ``validate_stream_url``).
            DestinationRefused: an address or the host is not allowed (the message names the rule).
            DestinationUnresolved: the host name does not resolve.
        """
        validate_stream_url(url, self.schemes)
        return self.check_host(urlsplit(url).hostname or "")

    def check_host(self, host: str) -> tuple[IPAddress, ...]:
        """The addresses ``host`` (a name or an address literal, without brackets) resolves to, every one of
        them allowed; else :class:`DestinationRefused` or :class:`DestinationUnresolved`."""
        host = host.rstrip(".")
        if not _HOST_CHARS.match(host):
            # Anything else (percent-escapes, IPv6 zones, non-ASCII) may be read differently by the client's URL
            # parser (FFmpeg's, httpx's) than by ours: refuse rather than check a host it would not connect to.
            raise DestinationRefused(f"{self.kind} URL host has unusual characters (use a plain host name or "
                                     "address)")
        addresses = _resolve(host, self.kind)
        named = self._name_listed(host)
        for address in addresses:
            plain = _unmapped(address)
            special = _special(plain)
            if special is not None and not self.allow_special and not self._explicitly_allows(plain, special[0]):
                network, label = special
                hint = self.special_hint or f"allowed only when {self.allow_list_name} names a network inside {network}"
                raise DestinationRefused(
                    f"{self.kind} destination refused: {_shown(host, plain)} is a {label} address ({network}); "
                    f"{hint}")
            if self.restricted and not named and not any(_within(plain, net) for net in self.networks):
                raise DestinationRefused(
                    f"{self.kind} destination refused: {_shown(host, plain)} is not in {self.allow_list_name}")
        return addresses

    def _name_listed(self, host: str) -> bool:
        host = host.lower()
        for name in self.names:
            if name.startswith("*.") and host.endswith(name[1:]) and host != name[2:]:
                return True
            if host == name:
                return True
        return False

    def _explicitly_allows(self, address: IPAddress, special: IPNetwork) -> bool:
        """A listed network that contains ``address`` and lies inside its special range."""
        return any(_within(address, net) and net.version == special.version and net.subnet_of(special)  # type: ignore[arg-type]
                   for net in self.networks)


def _within(address: IPAddress, network: IPNetwork) -> bool:
    return address.version == network.version and address in network


def _shown(host: str, address: IPAddress) -> str:
    return str(address) if host == str(address) else f"{host} resolves to {address}, which"


def _resolve(host: str, kind: str = "stream") -> tuple[IPAddress, ...]:
    """Every address of ``host`` (A and AAAA), as the system resolver gives them to FFmpeg."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise DestinationUnresolved(f"{kind} host {host!r} does not resolve, so it cannot be checked") from err
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolved(f"{kind} host {host!r} has no address")
    return tuple(addresses)
