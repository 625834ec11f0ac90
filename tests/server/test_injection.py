"""SQL-injection-shaped filters find nothing extra, and path traversal never reaches a file outside the data
directory: through the URL (sent raw to a real uvicorn, since HTTP clients normalise ``..`` away), through
encodings of it, or through a media path stored in the database."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from server.db.session import session_scope
from server.db.tables import Event, Explanation
from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, token_for
from tests.conftest import running_server
from tests.server.access import Seeded, seed

INJECTIONS = ["' OR 1=1 --", "fall' OR '1'='1", "\" OR \"\"=\"", "fall; DROP TABLE event; --", "%", "_", "*",
              "fall%", "') OR ('a'='a", "1 UNION SELECT * FROM api_token --", "\\", "fall\\' OR 1=1 #"]
SECRET = b"the secret outside the media folders"


@pytest.fixture
def rows(client: TestClient) -> Seeded:
    return seed(client.app)


def test_injection_shaped_filters_find_nothing_extra(client: TestClient, rows: Seeded) -> None:
    admin = bearer(client.app, "admin")
    everything = client.get("/api/v1/events").json()
    assert everything["count"] == 1
    filters = [("/api/v1/events", "label"), ("/api/v1/events", "room"), ("/api/v1/jobs", "kind"),
               ("/api/v1/audit", "user"), ("/api/v1/audit", "action"), ("/api/v1/audit", "object_type"),
               ("/api/v1/audit", "object_id")]
    for url, name in filters:
        for value in INJECTIONS:
            answer = client.get(url, params={name: value}, headers=admin)
            assert answer.status_code in (200, 422), (url, name, value, answer.text)
            if answer.status_code == 200:
                assert answer.json()["data"] == [], (url, name, value)  # equality, never a pattern or a clause
    for url, name in (("/api/v1/events", "status"), ("/api/v1/recordings", "status"), ("/api/v1/audit", "outcome"),
                      ("/api/v1/events", "recording"), ("/api/v1/events", "cursor"), ("/api/v1/audit", "since")):
        for value in ("' OR 1=1 --", "1 OR 1=1", "1; DROP TABLE event"):
            assert client.get(url, params={name: value}, headers=admin).status_code == 422, (url, name, value)
    # Nothing was changed or dropped on the way.
    assert client.get("/api/v1/events").json() == everything
    assert client.get(f"/api/v1/events/{rows.event_id}").status_code == 200


def _raw_get(base: str, target: str, token: str) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               "Connection: close\r\n\r\n").encode()
    received, deadline = b"", time.monotonic() + 15
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    return received


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """A real server with the seeded rows, a secret in the data directory (outside the media folders) and
    one just outside it."""
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    (tmp_path / "outside.txt").write_bytes(SECRET)
    with running_server(app) as base:
        rows = seed(app)
        (app.state.settings.data_dir / "inside.txt").write_bytes(SECRET)
        yield app, base, rows


def test_traversal_in_the_url_is_404(served: Any) -> None:
    app, base, rows = served
    token = token_for(app, "admin")
    e, x = rows.event_id, rows.explanation_id
    targets = [
        f"/api/v1/explanations/{x}/../../../../outside.txt", f"/api/v1/explanations/{x}/../../../inside.txt",
        f"/api/v1/explanations/{x}/..%2f..%2f..%2finside.txt", f"/api/v1/explanations/{x}/%2e%2e%2f%2e%2e%2finside.txt",
        f"/api/v1/explanations/{x}/%2e%2e/%2e%2e/inside.txt", f"/api/v1/explanations/{x}/..%5c..%5cinside.txt",
        f"/api/v1/explanations/{x}/%2fetc%2fpasswd", f"/api/v1/explanations/{x}//etc/passwd",
        f"/api/v1/explanations/{x}/overlay.png/../../../inside.txt", f"/api/v1/events/{e}/..%2f..%2f..%2finside.txt",
        f"/api/v1/events/{e}/keyframe.png/..%2f..%2finside.txt", f"/api/v1/events/{e}/%2e%2e/%2e%2e/inside.txt",
        "/../../inside.txt", "/..%2f..%2finside.txt", "/%2e%2e/%2e%2e/outside.txt", "/inside.txt", "/wardwatch.db",
        "/%2e%2e%2fdata%2finside.txt", "/app.js/..%2f..%2fdata%2finside.txt", "//etc/passwd", "/%2fetc%2fpasswd",
        "/api/v1/../../data/inside.txt", "/api/v1/%2e%2e/%2e%2e/data/inside.txt",
    ]
    for target in targets:
        answer = _raw_get(base, target, token)
        assert answer.startswith(b"HTTP/1.1 404 "), (target, answer[:200])
        assert SECRET not in answer and b"root:" not in answer, target
    # The real media still answers: the refusals above are not a broken route.
    assert _raw_get(base, f"/api/v1/explanations/{x}/overlay.png", token).startswith(b"HTTP/1.1 200 ")


def test_a_stored_media_path_outside_the_data_dir_is_404(served: Any, tmp_path: Path) -> None:
    """If a media path in the database ever pointed outside (a bad migration, a bug): still never served."""
    app, base, rows = served
    token = token_for(app, "admin")
    data_dir = app.state.settings.data_dir
    (data_dir / "media" / "seed" / "link.png").symlink_to(tmp_path / "outside.txt")
    for stored in ("../outside.txt", str(tmp_path / "outside.txt"), "media/../../outside.txt", "media/seed/link.png",
                   "/etc/passwd", "media/seed/../../../outside.txt", "media/seed"):
        with session_scope(app.state.session_factory) as session:
            session.execute(update(Event).where(Event.id == rows.event_id).values(key_frame_path=stored))
            session.execute(update(Explanation).where(Explanation.id == rows.explanation_id)
                            .values(overlay_path=stored))
        for target in (f"/api/v1/events/{rows.event_id}/keyframe.png",
                       f"/api/v1/explanations/{rows.explanation_id}/overlay.png"):
            answer = _raw_get(base, target, token)
            assert answer.startswith(b"HTTP/1.1 404 "), (stored, target, answer[:200])
            assert SECRET not in answer
