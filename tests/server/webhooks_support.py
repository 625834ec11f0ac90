"""What the webhook tests share: a real HTTP receiver on loopback (http.server in a thread), one that drips
its answer a byte at a time (a slow or hostile receiver), the documented receiver check, and API helpers."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.accounts import bearer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
#: retries in tenths of a second, three attempts at most
FAST = {"webhook_backoff_base_seconds": 0.05, "webhook_backoff_factor": 2.0, "webhook_max_attempts": 3,
        "webhook_timeout_seconds": 3.0}


def documented_verify() -> Callable[[str, bytes, Any], dict]:
    """The ``verify`` function of the receiver example in docs/webhooks.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    (source,) = [block for block in blocks if "def verify(" in block]
    assert len([line for line in source.splitlines() if line.strip()]) <= 7, "the example should stay short"
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation, on purpose
    return namespace["verify"]


@dataclass
class Received:
    body: bytes
    headers: Any  # email.message.Message: case-insensitive, as a receiver sees them
    at: float
    path: str = ""


@dataclass
class Receiver:
    """Answers POSTs with the scripted status codes in turn (then 200) and keeps what it got."""

    url: str
    codes: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            assert time.monotonic() < deadline, f"the receiver got {len(self.got)} of {count} requests"
            time.sleep(0.02)
        return self.got


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.got.append(Received(body, self.headers, time.time(), self.path))
            code = state.codes.pop(0) if state.codes else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/wardwatch"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Dripper:
    """A receiver that reads the request, then sends its status line and one header line every ``every``
    seconds, ``lines`` times, before ending the headers with 200: each read gets bytes well within any
    per-read timeout, so only an overall deadline ends the wait (/tmp/probe/p5.py of the security review)."""

    url: str
    every: float
    lines: int
    connections: list[float] = field(default_factory=list)  # when each connection was accepted
    finished: list[float] = field(default_factory=list)     # when the dripper got to the end of an answer


@pytest.fixture
def dripper() -> Iterator[Dripper]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    state = Dripper(url=f"http://127.0.0.1:{listener.getsockname()[1]}/slow", every=0.25, lines=40)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(state.lines):
                    if stop.wait(state.every):
                        return
                    conn.sendall(b"X-Drip: b\r\n")
                conn.sendall(b"Content-Length: 0\r\n\r\n")
                state.finished.append(time.monotonic())
            except OSError:
                pass  # the sender gave up and closed: what we want

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            state.connections.append(time.monotonic())
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield state
    finally:
        stop.set()
        listener.close()


def settings_for(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", **extra)


def subscribe(client: TestClient, admin: dict[str, str], url: str, events: list[str]) -> dict:
    answer = client.post("/api/v1/webhooks", json={"url": url, "events": events, "description": "test HIS"},
                         headers=admin)
    assert answer.status_code == 201, answer.text
    return answer.json()


def delivery_log(client: TestClient, admin: dict[str, str], webhook_id: int, **params: Any) -> dict:
    answer = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params, headers=admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_status(client: TestClient, admin: dict[str, str], webhook_id: int, status: str,
                timeout: float = 60) -> dict:
    """The newest delivery of the webhook, once it has ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        page = delivery_log(client, admin, webhook_id)
        if page["data"] and page["data"][0]["status"] == status:
            return page["data"][0]
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


def review(client: TestClient, event_id: int, decision: str = "confirmed", note: str = "seen at 8") -> dict:
    answer = client.post(f"/api/v1/events/{event_id}/review", json={"decision": decision, "note": note},
                         headers=bearer(client.app, "clinician"))
    assert answer.status_code == 200, answer.text
    return answer.json()
