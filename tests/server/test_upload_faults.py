"""A server killed with SIGKILL while a large upload streams in, and the start-up clean-up of what dead uploads
leave behind: after the restart nothing is half-registered (no recording, no job, no file in the staging area or
the recordings folder), while the staging directories of live processes are left alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.bootstrap import open_database
from server.db.session import session_scope
from server.db.tables import Job, Recording
from server.services.intake import IntakeOptions, file_sha256, register_recording
from server.services.recordings import create_recording
from server.services.upload_staging import CLAIM, INCOMING, clean_dead_uploads, new_staging_dir
from server.settings import Settings
from tests.accounts import token_for
from tests.server.faults_support import kill, process_env, server_url, start_server, stop, wait_for

CHUNK = 1024 * 1024
UPLOAD_BYTES = 2 * 1024 * CHUNK  # far more than arrives before the kill
BOUNDARY = "wardwatchkilltest"


def _rows(factory: sessionmaker[Session]) -> tuple[int, int]:
    with session_scope(factory) as session:
        return (session.scalar(select(func.count()).select_from(Recording)) or 0,
                session.scalar(select(func.count()).select_from(Job)) or 0)


def _multipart() -> tuple[Iterator[bytes], int]:
    """A multipart body with one large ``file`` part, produced as it is sent (never held in memory)."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        block = b"\0" * CHUNK
        for _ in range(UPLOAD_BYTES // CHUNK):
            yield block
        yield tail

    return body(), len(head) + UPLOAD_BYTES + len(tail)


def _staged_bytes(incoming: Path) -> int:
    return sum(f.stat().st_size for f in incoming.glob("*/*") if f.is_file()) if incoming.is_dir() else 0


@pytest.mark.postgres
def test_server_killed_during_an_upload_leaves_nothing_half_registered(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=None, device="cpu")
    _engine, factory = open_database(settings)
    admin = token_for(SimpleNamespace(state=SimpleNamespace(session_factory=factory)), "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    env, log = process_env(settings), tmp_path / "server.log"
    incoming = settings.data_dir / INCOMING
    server = start_server(env, log)
    outcome: list[BaseException | httpx.Response] = []
    try:
        base = server_url(server)
        wait_for(lambda: _health(base), timeout=120, process=server, log=log, interval=0.25)
        body, length = _multipart()

        def send() -> None:
            try:
                outcome.append(httpx.post(f"{base}/api/v1/recordings", content=body, timeout=120, headers={
                    **headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Content-Length": str(length)}))
            except BaseException as exc:  # noqa: BLE001 - what the client saw is the point of the test
                outcome.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_for(lambda: _staged_bytes(incoming) >= 16 * CHUNK, timeout=60, process=server, log=log, interval=0.02)
        kill(server)  # mid-upload
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome  # the client saw an error
        left = [p for p in incoming.iterdir()]
        assert len(left) == 1 and _staged_bytes(incoming) < UPLOAD_BYTES  # the dead upload's partial file ...
        assert left[0].name.split(":")[1] == str(server.pid)  # ... in a staging directory named after its process
        assert _rows(factory) == (0, 0)

        server = start_server(env, log)  # the restart
        base = server_url(server)
        wait_for(lambda: _health(base), timeout=120, process=server, log=log, interval=0.25)
        assert list(incoming.iterdir()) == []  # cleaned at start-up
        assert _rows(factory) == (0, 0)  # no recording, no job
        assert not any(p.is_file() for p in settings.recordings_dir.rglob("*"))  # no orphan file
    finally:
        stop(server)


def _health(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _stage(settings: Settings, owner: str, *, claim: dict | None = None) -> Path:
    staging = settings.data_dir / INCOMING / owner
    staging.mkdir(parents=True)
    (staging / "part.mp4").write_bytes(b"partial")
    if claim is not None:
        (staging / CLAIM).write_text(json.dumps(claim))
    return staging


def _moved(settings: Settings, relative: str) -> Path:
    path = settings.data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"moved before a commit")
    return path


def test_start_up_removes_dead_uploads_and_their_uncommitted_files_only(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu")
    _engine, factory = open_database(settings)
    host = socket.gethostname()
    dead = f"{host}:{_dead_pid()}"
    with session_scope(factory) as session:  # a recording that did commit
        committed = create_recording(session=session, source="kept.mp4")
        committed.path = f"recordings/{committed.id}/kept.mp4"
        committed_id, committed_path = committed.id, committed.path
    kept_file = _moved(settings, committed_path)
    orphan = _moved(settings, "recordings/999/lost.mp4")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not ours")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [
            _stage(settings, f"{dead}:aaaa0001"),  # died while the upload was arriving
            _stage(settings, f"{dead}:aaaa0002", claim={"recording_id": 999, "path": "recordings/999/lost.mp4"}),
            _stage(settings, f"{dead}:aaaa0003", claim={"recording_id": committed_id, "path": committed_path}),
            _stage(settings, f"{dead}:aaaa0004", claim={"recording_id": 998, "path": "../../outside.mp4"}),
            _stage(settings, f"{host}:{os.getpid()}:00000000beef"),  # this pid, an earlier process (a container)
        ]
        kept = [
            _stage(settings, f"{host}:{sleeper.pid}:aaaa0005"),  # a live upload of another process
            _stage(settings, f"{new_staging_dir(settings).name}"),  # a live upload of this process
            _stage(settings, f"another-host:{_dead_pid()}:aaaa0006"),  # not ours to judge while it is written to
        ]
        idle = _stage(settings, f"recreated-container:{_dead_pid()}:aaaa0007")  # nothing written for over a day
        for path in (idle, *idle.iterdir()):
            os.utime(path, (time.time() - 25 * 3600,) * 2)
        gone.append(idle)
        assert clean_dead_uploads(settings, factory) == len(gone)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [p.exists() for p in gone] == [False] * len(gone)
    assert [p.exists() for p in kept] == [True] * len(kept)
    assert not orphan.exists() and not orphan.parent.exists()  # moved by a transaction that never committed
    assert kept_file.exists()  # its recording committed: the file is the recording's
    assert outside.exists()  # a claim never deletes outside the recordings folder


def test_a_staged_upload_claims_its_recording_before_it_moves(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    """The claim that lets a restart undo the move names the recording and the path the transaction commits."""
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu")
    _engine, factory = open_database(settings)
    staging = new_staging_dir(settings)
    staging.mkdir(parents=True)
    upload = staging / "ward.mp4"
    upload.write_bytes(ward_video.video.read_bytes())
    public, _job_id = register_recording(settings=settings, factory=factory, source="ward.mp4", file=upload,
                                         sha256=file_sha256(upload), size=upload.stat().st_size,
                                         options=IntakeOptions(), move_into_data_dir=True)
    noted = json.loads((staging / CLAIM).read_text())
    assert noted == {"recording_id": public.id, "path": f"recordings/{public.id}/ward.mp4"}
    assert (settings.data_dir / noted["path"]).is_file() and not upload.exists()
    assert clean_dead_uploads(settings, factory) == 0  # this process is alive: its upload is not touched
    assert staging.is_dir()
