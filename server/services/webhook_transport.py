"""One webhook POST with an overall deadline, to addresses checked at the connection.

Why not a plain HTTP client call: its timeouts are per operation. A receiver that sends a header line every few
seconds never lets one read time out, so a POST with a 5 s timeout stayed open for as long as the receiver liked
(18 s in the security review; minutes are as easy). That held a sender thread, and once the claim's lease ran
out a second sender sent the same attempt again. Here every read, write, connect and TLS handshake waits at most
what is left until the attempt's deadline (and at most the per-operation timeout), so the attempt ends by the
deadline whatever the receiver does: a blocking read is bounded by the socket timeout it is given, no watchdog
thread needed.

Where it connects: the network backend resolves the host itself and checks every address with the webhook
target policy (``allowed_addresses``) right before connecting, then connects to those very addresses. So an
address that became forbidden is refused without a packet sent, and no second look-up can be re-pointed in
between (DNS rebinding). TLS still verifies the certificate against the URL's host name (httpcore passes it as
``server_hostname``).

httpcore (the transport under httpx) is used directly, with its documented ``network_backend`` hook: no
redirects are followed, no proxy or environment is read, and no request line is logged (httpx logs the URL, a
query token included, at INFO).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import httpcore
import httpx

from ingest.destinations import IPAddress

#: writes go out in pieces, each with its own share of the time left
_CHUNK = 16 * 1024


class DeadlineExceeded(httpcore.TimeoutException):
    """The attempt's overall deadline passed (a receiver too slow, or dripping its answer)."""


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation waits at most until the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner, self._deadline = inner, deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the attempt's deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _CHUNK):
            self._inner.write(buffer[start:start + _CHUNK], self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: object, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout))  # type: ignore[arg-type]
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects only to the addresses ``addresses(host)`` returns (checked, resolved once), by the deadline."""

    def __init__(self, addresses: Callable[[str], Iterable[IPAddress]], deadline: float) -> None:
        self._addresses, self._deadline = addresses, deadline
        self._plain = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[object] | None = None) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self._addresses(host):  # raises when an address is refused: nothing is connected
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("the attempt's deadline passed while connecting")
            try:
                stream = self._plain.connect_tcp(str(address), port, min(left, timeout or left), local_address,
                                                 socket_options)  # type: ignore[arg-type]
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next address, as the system's own connect would
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failure or httpcore.ConnectError(f"{host} has no address to connect to")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[object] | None = None) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float, deadline_seconds: float,
         addresses: Callable[[str], Iterable[IPAddress]]) -> int:
    """POST ``body`` to ``url`` and return the status code; the response body is not read (a receiver cannot
    make us download much). Every operation waits at most ``timeout``, the whole attempt at most
    ``deadline_seconds``. Raises httpcore's errors (``TimeoutException``, ``NetworkError``, ``ProtocolError``,
    ``UnsupportedProtocol``), ``httpx.InvalidURL``, or whatever ``addresses`` raises for a refused host."""
    deadline = time.monotonic() + deadline_seconds
    parsed = httpx.URL(url)  # the URL as httpx reads it: IDNA, percent-encoding, IPv6 brackets
    target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
    limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    with httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=1,
                                 network_backend=_CheckedBackend(addresses, deadline)) as pool:
        with pool.stream("POST", target, headers=list(headers.items()), content=body,
                         extensions={"timeout": limits}) as response:
            return response.status
