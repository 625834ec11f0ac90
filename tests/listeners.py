"""A real TCP listener on loopback that counts who connects: the witness of "the server called this address"."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class CountingListener:
    """Listens on 127.0.0.1 (a free port), accepts every connection, records what the client sent first, and
    closes it at once (to a stream reader: a camera that hangs up, a failed attempt)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="test-listener")

    @property
    def connections(self) -> int:
        return len(self.received)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.05)
                try:
                    first = conn.recv(4096)
                except OSError:
                    first = b""
                self.received.append(first)

    def wait_for(self, count: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.connections < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.connections

    def __enter__(self) -> CountingListener:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
