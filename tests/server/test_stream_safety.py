"""Live stream sources are safe: only ``write:recordings`` starts one, only allowed destinations are ever
connected to (a real listening socket on loopback witnesses it), retries and readers are bounded, and the
URL's credentials are encrypted at rest and absent from responses, the database's plain columns and logs.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from server.db.base import utcnow
from server.db.migrate import downgrade, upgrade
from server.db.session import make_engine
from server.main import create_app
from server.security.secret_box import SecretBox, new_key
from server.settings import Settings
from tests.accounts import act_as, bearer
from tests.listeners import CountingListener

SECRETS = ("camuser", "s3cretpw", "abc123")
FAST = {"stream_backoff_initial_seconds": 0.01, "stream_backoff_max_seconds": 0.05}


def _settings(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", **extra)


def _secret_url(port: int) -> str:
    return f"tcp://camuser:s3cretpw@127.0.0.1:{port}/internal/admin?token=abc123"


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked: {text[:2000]}"


def _stream_job(client: TestClient, admin: dict[str, str], recording_id: int) -> dict[str, Any]:
    jobs = client.get("/api/v1/jobs", params={"kind": "stream"}, headers=admin).json()["data"]
    return next(job for job in jobs if job["recording_id"] == recording_id)


def _wait_finished(client: TestClient, admin: dict[str, str], recording_id: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (job := _stream_job(client, admin, recording_id))["finished_at"] is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wardwatch-stream-")]


REFUSED = [
    ("tcp://127.0.0.1:{port}", "loopback"),
    ("http://localhost:{port}/internal/admin", "localhost resolves to 127.0.0.1, which is a loopback address"),
    ("http://camuser:s3cretpw@127.0.0.1:{port}/internal/admin?token=abc123", "loopback"),
    ("tcp://2130706433:{port}", "loopback"),
    ("tcp://0.0.0.0:{port}", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/iam/", "link-local (cloud metadata)"),
    ("rtsp://[::1]:{port}/live", "loopback"),
    ("file:///etc/passwd", "unsupported stream URL scheme 'file'"),
    ("concat:http://127.0.0.1:{port}/a|http://127.0.0.1:{port}/b", "unsupported stream URL scheme 'concat'"),
    ("subfile,,start,0,end,0,,:file:///etc/passwd", "unsupported stream URL scheme"),
    ("udp://127.0.0.1:{port}", "unsupported stream URL scheme 'udp'"),
    ("rtsp://camera-that-does-not-exist.invalid/live", "does not resolve"),
]


def test_refused_destinations_are_never_connected_to(db_url: str, tmp_path: Path) -> None:
    with CountingListener() as internal, TestClient(create_app(_settings(db_url, tmp_path))) as client:
        act_as(client, "clinician")
        for template, rule in REFUSED:
            answer = client.post("/api/v1/recordings", json={"url": template.format(port=internal.port)})
            assert answer.status_code == 422, (template, answer.text)
            assert rule in answer.json()["detail"], answer.text
            _no_secret(answer.text)
        time.sleep(0.3)  # anything started in the background would have connected by now
        assert internal.connections == 0
        assert client.get("/api/v1/recordings").json()["count"] == 0
        trail = client.get("/api/v1/audit", headers=bearer(client.app, "auditor"), params={"limit": 100})
        refusals = [e for e in trail.json()["data"] if e["status_code"] == 422]
        assert len(refusals) == len(REFUSED)  # each refusal is on the trail, naming the rule
        _no_secret(trail.text)


def test_only_write_recordings_starts_a_stream(db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, stream_allowed_networks=["127.0.0.1/32"])
    with CountingListener() as camera, TestClient(create_app(settings)) as client:
        body = {"url": f"tcp://127.0.0.1:{camera.port}"}
        assert client.post("/api/v1/recordings", json=body).status_code == 401
        reader = bearer(client.app, "clinician", scopes=["read:events", "review"])
        assert client.post("/api/v1/recordings", json=body, headers=reader).status_code == 403
        assert client.post("/api/v1/recordings", json=body, headers=bearer(client.app, "auditor")).status_code == 403
        time.sleep(0.3)
        assert camera.connections == 0
        assert client.get("/api/v1/recordings", headers=reader).json()["count"] == 0


def test_allowed_stream_connects_retries_a_bounded_number_of_times_and_keeps_its_secrets(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SQL statements and their parameters included
    settings = _settings(db_url, tmp_path, stream_allowed_networks=["127.0.0.1/32"], stream_max_reconnects=3,
                         **FAST)
    with CountingListener() as camera, TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        admin = bearer(client.app, "admin")
        url = _secret_url(camera.port)
        created = client.post("/api/v1/recordings", json={"url": url, "room": "icu-3"})
        assert created.status_code == 201, created.text
        recording = created.json()
        assert recording["source"] == f"tcp://***@127.0.0.1:{camera.port}/internal/admin?token=***"
        job = _wait_finished(client, admin, recording["id"])
        # The camera hangs up at once, every time: exactly stream_max_reconnects connections, then the job fails.
        assert camera.connections == 3
        assert job["status"] == "failed" and "unavailable after 3 attempts" in job["error"]
        assert job["params"] == {"url": "***", "source": recording["source"]}
        final = client.get(f"/api/v1/recordings/{recording['id']}").json()
        assert final["status"] == "failed" and "unavailable after 3 attempts" in final["error"]
        time.sleep(0.5)
        assert camera.connections == 3  # and nothing after
        answers = [created, client.get(f"/api/v1/recordings/{recording['id']}"), client.get("/api/v1/recordings"),
                   client.get("/api/v1/jobs", params={"kind": "stream"}, headers=admin),
                   client.get(f"/api/v1/jobs/{job['id']}", headers=admin),
                   client.get("/api/v1/audit", headers=admin, params={"limit": 100})]
        for answer in answers:
            assert answer.status_code == 200 or answer is created
            _no_secret(answer.text)
        _no_secret(_database_dump(db_url))
        stored = _stored_params(db_url, job["id"])
        assert stored["url"].startswith("fernet:") and settings.secret_box().decrypt(stored["url"]) == url
    assert "unavailable after 3 attempts" in caplog.text  # the logs were captured...
    _no_secret(caplog.text)  # ...and hold no secret at any level


def test_a_host_name_must_resolve_to_allowed_addresses_only(db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, stream_allowed_networks=["10.0.0.0/8", "localhost"])
    with CountingListener() as camera, TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        for host in ("localhost", "127.0.0.1"):  # a name entry never unlocks loopback
            answer = client.post("/api/v1/recordings", json={"url": f"tcp://{host}:{camera.port}"})
            assert answer.status_code == 422 and "loopback" in answer.json()["detail"]
        outside = client.post("/api/v1/recordings", json={"url": "rtsp://192.168.7.7/live"})
        assert outside.status_code == 422
        assert "192.168.7.7 is not in WARDWATCH_STREAM_ALLOWED_NETWORKS" in outside.json()["detail"]
        time.sleep(0.3)
        assert camera.connections == 0


def test_the_stream_pool_is_bounded(db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, stream_allowed_networks=["127.0.0.1/32"], max_streams=3,
                         stream_max_reconnects=0,  # retry forever: the readers stay busy until stopped
                         stream_backoff_initial_seconds=0.3, stream_backoff_max_seconds=0.6)
    with CountingListener() as camera, TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        with ThreadPoolExecutor(max_workers=20) as senders:  # 20 at once: admission must not race
            answers = list(senders.map(
                lambda _: client.post("/api/v1/recordings", json={"url": f"tcp://127.0.0.1:{camera.port}"}),
                range(20)))
        answers.sort(key=lambda a: a.status_code)
        codes = [a.status_code for a in answers]
        assert codes.count(201) == 3 and codes.count(429) == 17, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert "the limit (WARDWATCH_MAX_STREAMS) is 3" in refused.json()["detail"]
        assert refused.headers["Retry-After"] == "60"
        # Per stream one reader and one stop watcher, nothing for the refused ones (the other new threads are
        # the request handlers' idle worker pool, there whatever the route does). A watcher may start a moment
        # after its answer, so wait for the set, and never see more than it.
        deadline = time.monotonic() + 10
        while True:
            ours = sorted(t.name.split("-")[1] for t in threading.enumerate()
                          if t.name.startswith(("wardwatch-stream", "wardwatch-stopwatch")))
            assert ours.count("stream") <= 3 and ours.count("stopwatch") <= 3, ours  # 20 requests, 3 readers
            if ours == ["stopwatch"] * 3 + ["stream"] * 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ours == ["stopwatch"] * 3 + ["stream"] * 3, ours
        assert len(_stream_threads()) == 3
        assert camera.wait_for(3) >= 3  # the admitted ones are really reading
        assert client.get("/api/v1/recordings").json()["count"] == 3  # refused requests leave no rows
        for answer in answers[:3]:
            assert client.post(f"/api/v1/recordings/{answer.json()['id']}/stop").status_code == 200
        deadline = time.monotonic() + 20
        while _stream_threads():
            assert time.monotonic() < deadline, _stream_threads()
            time.sleep(0.1)
        again = client.post("/api/v1/recordings", json={"url": f"tcp://127.0.0.1:{camera.port}"})
        assert again.status_code == 201  # the slots came back
        assert client.post(f"/api/v1/recordings/{again.json()['id']}/stop").status_code == 200
        deadline = time.monotonic() + 20
        while _stream_threads():
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_restart_resumes_streams_it_cut_off(db_url: str, tmp_path: Path) -> None:
    """A stream job left running by a dead server (a row from before leases: no owner) is re-queued and read
    again by the new server -- not failed, and never re-scored as a file (it has none)."""
    settings = _settings(db_url, tmp_path)
    app = create_app(settings)
    with TestClient(app):
        factory = app.state.session_factory
        from server.db.session import session_scope
        from server.db.tables import Job, JobStatus, Recording, RecordingStatus

        with session_scope(factory) as session:
            recording = Recording(source="rtsp://10.0.0.5/live", status=RecordingStatus.ingesting)
            session.add(recording)
            session.flush()
            session.add(Job(kind="stream", status=JobStatus.running, recording_id=recording.id, attempts=1,
                            params={"url": settings.secret_box().encrypt("rtsp://10.0.0.5/live")}))
            recording_id = recording.id
    with TestClient(create_app(settings)) as client:  # the restart
        admin = bearer(client.app, "admin")
        deadline = time.monotonic() + 30
        while (jobs := client.get("/api/v1/jobs", headers=admin).json()["data"])[0]["status"] == "queued":
            assert time.monotonic() < deadline  # handed to a new reader at start-up
            time.sleep(0.1)
        assert [(j["kind"], j["status"], j["attempts"]) for j in jobs] == [("stream", "running", 2)]
        assert "worker lost" in jobs[0]["error"]  # why it was re-queued, until it ends
        assert client.get(f"/api/v1/recordings/{recording_id}", headers=admin).json()["status"] == "ingesting"
        assert client.post(f"/api/v1/recordings/{recording_id}/stop", headers=admin).status_code == 200
        final = _wait_finished(client, admin, recording_id, timeout=30)
        assert final["status"] == "succeeded" and final["result"]["stopped"] is True


def test_migration_0005_encrypts_stored_urls_and_its_downgrade_decrypts_them(db_url: str) -> None:
    box = SecretBox([new_key()])
    upgrade(db_url)
    downgrade(db_url, "0003")
    url = "rtsp://camuser:s3cretpw@10.0.0.5:554/live?token=abc123"
    engine = make_engine(db_url)
    recording = sa.table("recording", sa.column("id"), sa.column("source"), sa.column("status"),
                         sa.column("error"), sa.column("warnings", sa.JSON), sa.column("clip_count"),
                         sa.column("created_at"), sa.column("updated_at"))
    job = sa.table("job", sa.column("id"), sa.column("kind"), sa.column("status"), sa.column("progress"),
                   sa.column("params", sa.JSON), sa.column("error"), sa.column("recording_id"),
                   sa.column("created_at"))
    now = utcnow().replace(tzinfo=None)
    old_shown = "rtsp://camuser:***@10.0.0.5:554/live?token=abc123"  # what earlier versions stored and showed
    try:
        with engine.begin() as conn:
            conn.execute(recording.insert().values(
                id=1, source=old_shown, status="failed", error=f"stream {old_shown} unavailable after 3 attempts",
                warnings=[f"stream dropped ({old_shown}); reconnecting"], clip_count=0, created_at=now,
                updated_at=now))
            conn.execute(job.insert().values(id=1, kind="stream", status="failed", progress=1.0, params={"url": url},
                                             error=f"stream {old_shown} unavailable", recording_id=1, created_at=now))
            conn.execute(job.insert().values(id=2, kind="score", status="succeeded", progress=1.0,
                                             params={"source": "night.mp4"}, recording_id=1, created_at=now))
        upgrade(db_url, secret_box=lambda: box)
        _no_secret(_database_dump(db_url))
        params = _stored_params(db_url, 1)
        assert box.decrypt(params["url"]) == url
        assert params["source"] == "rtsp://***@10.0.0.5:554/live?token=***"
        assert _stored_params(db_url, 2) == {"source": "night.mp4"}  # other jobs untouched
        upgrade(db_url, secret_box=lambda: box)  # idempotent: nothing encrypted twice
        assert box.decrypt(_stored_params(db_url, 1)["url"]) == url
        downgrade(db_url, "0003", secret_box=lambda: box)
        assert _stored_params(db_url, 1) == {"url": url}
    finally:
        engine.dispose()


def _database_dump(db_url: str) -> str:
    """Every row of the tables a stream touches, as text: what a backup or a dump would hold."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all())  # noqa: S608 - fixed names
                             for table in ("recording", "job", "audit_log", "clip", "event"))
    finally:
        engine.dispose()


def _stored_params(db_url: str, job_id: int) -> dict[str, Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.text("SELECT params FROM job WHERE id = :id"), {"id": job_id}).scalar_one()
    finally:
        engine.dispose()
    return json.loads(value) if isinstance(value, str) else value


def test_reconnects_are_bounded_by_default(tmp_path: Path) -> None:
    default = Settings(data_dir=tmp_path / "data").stream_reconnect()
    assert default.max_attempts == 20 and default.initial_delay == 1.0 and default.max_delay == 30.0
    assert [default.delay(n) for n in (1, 2, 3, 6, 20)] == [1.0, 2.0, 4.0, 30.0, 30.0]  # doubling, capped
    assert Settings(data_dir=tmp_path / "data", stream_max_reconnects=0).stream_reconnect().max_attempts is None
    with pytest.raises(ValueError, match="stream_backoff_max_seconds"):
        Settings(data_dir=tmp_path / "data", stream_backoff_initial_seconds=5, stream_backoff_max_seconds=1)
    with pytest.raises(ValueError, match="allow-list entry"):
        Settings(data_dir=tmp_path / "data", stream_allowed_networks="10.0.0.0/8, 300.1.2.3/32")
    parsed = Settings(data_dir=tmp_path / "data", stream_allowed_networks='["10.20.0.0/16", "*.ward.example"]')
    assert parsed.stream_allowed_networks == ["10.20.0.0/16", "*.ward.example"]


def test_key_rotation_reencrypts_stream_urls(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotation as docs/streams.md describes it: new key first, old one kept, ``wardwatch streams rekey``, then
    the old key can go and the worker still opens the URL."""
    from server.cli import main
    from server.db.session import session_scope
    from server.db.tables import Job
    from server.settings import get_settings

    old, new = new_key(), new_key()
    url = "rtsp://camuser:s3cretpw@10.0.0.5/live?token=abc123"
    app = create_app(_settings(db_url, tmp_path, secret_keys=[old]))
    with TestClient(app):
        with session_scope(app.state.session_factory) as session:
            job = Job(kind="stream", status="failed", params={"url": SecretBox([old]).encrypt(url)})
            session.add(job)
            session.flush()
            job_id = job.id
    monkeypatch.setenv("WARDWATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("WARDWATCH_SECRET_KEYS", new)  # the old key forgotten too early: refused, nothing changed
    get_settings.cache_clear()
    try:
        assert main(["streams", "rekey"]) == 2
        assert "keep the old key" in capsys.readouterr().err
        monkeypatch.setenv("WARDWATCH_SECRET_KEYS", f"{new},{old}")
        get_settings.cache_clear()
        assert main(["streams", "rekey"]) == 0
        assert "re-encrypted 1 stream URL(s)" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    stored = _stored_params(db_url, job_id)
    assert SecretBox([new]).decrypt(stored["url"]) == url  # the old key is no longer needed
    assert stored["source"] == "rtsp://***@10.0.0.5/live?token=***"
    _no_secret(_database_dump(db_url))


def test_a_url_no_key_opens_fails_the_job_with_the_reason(db_url: str, tmp_path: Path) -> None:
    from server.db.session import session_scope
    from server.db.tables import Job, JobStatus, Recording, RecordingStatus

    app = create_app(_settings(db_url, tmp_path))
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            recording = Recording(source="rtsp://10.0.0.5/live", status=RecordingStatus.ingesting)
            session.add(recording)
            session.flush()
            job = Job(kind="stream", status=JobStatus.queued, recording_id=recording.id,
                      params={"url": SecretBox([new_key()]).encrypt("rtsp://10.0.0.5/live")})  # a lost key
            session.add(job)
            session.flush()
            recording_id, job_id = recording.id, job.id
        app.state.dispatcher.stream(recording_id, job_id)
        admin = bearer(app, "admin")
        finished = _wait_finished(client, admin, recording_id, timeout=30)
        assert finished["status"] == "failed" and "cannot be decrypted" in finished["error"]
        assert client.get(f"/api/v1/recordings/{recording_id}", headers=admin).json()["status"] == "failed"
