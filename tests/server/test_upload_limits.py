"""Uploads cannot hold the server or its disk: a stalled body is cut off (408) against a real uvicorn on
loopback, with nothing left behind; rejected files go to a quarantine folder that stays under its cap."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.db.access_tables import AuditLog, Outcome
from server.db.tables import Recording, RecordingStatus
from server.main import create_app
from server.services.quarantine import prune, quarantine
from server.settings import Settings
from tests.accounts import act_as, token_for
from tests.conftest import running_server
from tests.server.conftest import upload

IDLE = 1.5  # seconds: the test servers' body idle timeout


@pytest.fixture
def stall_app(db_url: str, tmp_path: Path) -> Any:
    return create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                               body_idle_timeout_seconds=IDLE))


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _read_all(sock: socket.socket, limit: float = 15) -> bytes:
    """Everything until the server closes the connection (or ``limit`` seconds)."""
    received, deadline = b"", time.monotonic() + limit
    try:
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _head(path: str, token: str, content_type: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").encode()


FILE_PART = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stall.mp4\"\r\n"
             b"Content-Type: video/mp4\r\n\r\n")


def _files(root: Path, *names: str) -> list[Path]:
    """The files under ``root/<name>``, while the server may be removing them."""
    found = []
    for name in names:
        try:
            found += [p for p in (root / name).rglob("*") if p.is_file()]
        except FileNotFoundError:
            continue
    return found


def _recordings(app: Any) -> int:
    with app.state.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Recording)) or 0


def _wait_for(condition: Any, limit: float = 10) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_stalled_upload_is_408_and_leaves_nothing(stall_app: Any) -> None:
    data_dir = stall_app.state.settings.data_dir
    with running_server(stall_app) as base:
        token = token_for(stall_app, "clinician")
        with _connect(base) as sock:
            sock.sendall(_head("/api/v1/recordings", token, "multipart/form-data; boundary=xyz", 50_000_000)
                         + FILE_PART + b"\x00" * 200_000)
            # The partial file is on disk while the body arrives...
            assert _wait_for(lambda: _files(data_dir, "incoming")), "the upload never started"
            stalled = time.monotonic()
            answer = _read_all(sock)  # ...then the client sends nothing more
            waited = time.monotonic() - stalled
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"stalled" in answer and b"content-security-policy" in answer.lower()
        assert waited < IDLE + 8, waited  # cut off by the idle timeout, not by the test's own limit
        # ...and nothing of it is left: no partial file, no staging folder, no recording half-registered.
        assert _wait_for(lambda: not _files(data_dir, "incoming", "recordings", "quarantine"))
        assert not any((data_dir / "incoming").iterdir())
        assert _recordings(stall_app) == 0
        with stall_app.state.session_factory() as session:
            entry = session.scalars(select(AuditLog).where(AuditLog.status_code == 408)).one()
        assert entry.outcome == Outcome.refused and entry.action == "upload_recording"
        assert httpx.get(f"{base}/api/v1/health", timeout=10).status_code == 200


def test_a_stalled_json_body_is_408(stall_app: Any) -> None:
    with running_server(stall_app) as base:
        token = token_for(stall_app, "admin")
        for path in ("/api/v1/users", "/api/v1/recordings"):
            with _connect(base) as sock:
                sock.sendall(_head(path, token, "application/json", 500) + b'{"username": "nur')
                answer = _read_all(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), (path, answer[:300])


def test_a_slow_but_steady_upload_is_not_cut_off(stall_app: Any) -> None:
    """The timeout is for silence, not for slowness: pauses shorter than it, adding up to more, are fine."""
    with running_server(stall_app) as base:
        token = token_for(stall_app, "clinician")
        body = FILE_PART + b"patient slept well\n" * 200 + b"\r\n--xyz--\r\n"
        pieces = [body[i:i + len(body) // 5 + 1] for i in range(0, len(body), len(body) // 5 + 1)]
        with _connect(base) as sock:
            sock.sendall(_head("/api/v1/recordings", token, "multipart/form-data; boundary=xyz", len(body)))
            started = time.monotonic()
            for piece in pieces:
                time.sleep(IDLE * 0.4)
                sock.sendall(piece)
            answer = _read_all(sock, limit=20)
        assert time.monotonic() - started > IDLE
        assert answer.startswith(b"HTTP/1.1 422 ") and b"not a video" in answer, answer[:300]


def test_a_client_that_disconnects_mid_upload_leaves_nothing(stall_app: Any) -> None:
    data_dir = stall_app.state.settings.data_dir
    with running_server(stall_app) as base:
        token = token_for(stall_app, "clinician")
        with _connect(base) as sock:
            sock.sendall(_head("/api/v1/recordings", token, "multipart/form-data; boundary=xyz", 50_000_000)
                         + FILE_PART + b"\x00" * 200_000)
            assert _wait_for(lambda: _files(data_dir, "incoming"))
        assert _wait_for(lambda: not _files(data_dir, "incoming", "recordings")), "the partial file stayed"
        assert _recordings(stall_app) == 0
        assert httpx.get(f"{base}/api/v1/health", timeout=10).status_code == 200


def test_uploads_are_held_to_the_upload_limit_not_the_json_one(tmp_path: Path) -> None:
    """JSON bodies stop at ``max_body_bytes``; an upload streams past it, up to ``max_upload_bytes``."""
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", max_body_bytes=64 * 1024)
    big = _notes(tmp_path, 1, size=3 * 1024 * 1024)
    with TestClient(create_app(settings)) as client:
        answer = upload(act_as(client, "clinician"), big)
        assert answer.status_code == 422 and "not a video" in answer.json()["detail"], answer.text
        admin = {"Authorization": client.headers["Authorization"]}
        too_big = client.post("/api/v1/session", json={"username": "x" * 100_000, "password": "p"}, headers=admin)
        assert too_big.status_code == 413, too_big.text


# --- rejected uploads: a bounded quarantine -----------------------------------------------------------------


def _notes(tmp_path: Path, index: int, size: int = 1000) -> Path:
    path = tmp_path / f"notes-{index}.mp4"
    line = f"night {index}: patient slept well\n".encode()
    path.write_bytes((line * (size // len(line) + 1))[:size])
    return path


def test_rejected_uploads_are_quarantined_under_the_cap(db_url: str, tmp_path: Path) -> None:
    cap = 2500
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                        quarantine_max_bytes=cap)
    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        ids = []
        for index in range(5):
            answer = upload(client, _notes(tmp_path, index))
            assert answer.status_code == 422 and "not a video" in answer.json()["detail"], answer.text
            ids.append(int(answer.json()["detail"].rsplit("recording ", 1)[1].split()[0]))
            kept = _files(settings.data_dir, "quarantine")
            assert sum(p.stat().st_size for p in kept) <= cap, kept  # the cap holds after every rejection
        kept_names = sorted(p.name for p in _files(settings.data_dir, "quarantine"))
        assert kept_names == [f"recording-{ids[3]}-notes-3.mp4", f"recording-{ids[4]}-notes-4.mp4"]  # newest
        assert _files(settings.data_dir, "recordings") == []  # nothing of a rejected upload stays there
        for recording_id in ids:
            shown = client.get(f"/api/v1/recordings/{recording_id}").json()
            assert shown["status"] == RecordingStatus.failed and "not a video" in shown["error"]
        assert any("quarantine/" in w for w in client.get(f"/api/v1/recordings/{ids[4]}").json()["warnings"])

        # Larger than the whole cap: deleted at once, the folder untouched.
        answer = upload(client, _notes(tmp_path, 9, size=cap + 1))
        assert answer.status_code == 422
        assert sorted(p.name for p in _files(settings.data_dir, "quarantine")) == kept_names
        # The same rejected content again (a failed recording is no duplicate: it may be sent again): refused
        # again, kept as the newest, the oldest making room.
        again = upload(client, _notes(tmp_path, 3))
        assert again.status_code == 422, again.text
        again_id = int(again.json()["detail"].rsplit("recording ", 1)[1].split()[0])
        assert sorted(p.name for p in _files(settings.data_dir, "quarantine")) == [
            f"recording-{ids[4]}-notes-4.mp4", f"recording-{again_id}-notes-3.mp4"]
        assert _files(settings.data_dir, "recordings") == []
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            assert all(r.path is None for r in session.scalars(select(Recording)))


def test_a_zero_cap_deletes_rejected_uploads(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", quarantine_max_bytes=0)
    with TestClient(create_app(settings)) as client:
        assert upload(act_as(client, "clinician"), _notes(tmp_path, 1)).status_code == 422
    assert _files(settings.data_dir, "quarantine", "recordings", "incoming") == []


def test_prune_removes_the_oldest_first(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    for index, age in enumerate((300, 100, 200)):  # seconds ago
        path = folder / f"f{index}"
        path.write_bytes(b"x" * 100)
        os.utime(path, (time.time() - age, time.time() - age))
    assert [p.name for p in prune(folder, 150)] == ["f0", "f2"]
    assert [p.name for p in folder.iterdir()] == ["f1"]
    incoming = tmp_path / "new"
    incoming.write_bytes(b"y" * 120)
    kept = quarantine(incoming, folder, name="new", cap_bytes=150)  # the new file stays; the older one goes
    assert kept == folder / "new" and sorted(p.name for p in folder.iterdir()) == ["new"]
