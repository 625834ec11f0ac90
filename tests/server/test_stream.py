"""A live stream served on loopback by ffmpeg: clips are committed as they arrive, events close while the
stream runs, and the API stops it; bad stream URLs are refused."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.accounts import act_as
from tests.conftest import free_port

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def test_live_stream_until_stopped(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = subprocess.Popen(
        [FFMPEG, "-loglevel", "error", "-re", "-i", str(ward_video.video), "-c", "copy", "-f", "mpegts",
         f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the ffmpeg server is on loopback: only an allow-list entry inside 127.0.0.0/8 lets a stream reach it
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", stream_max_reconnects=3,
                        stream_allowed_networks=["127.0.0.1/32"])
    try:
        time.sleep(0.5)
        with TestClient(create_app(settings)) as client:
            act_as(client, "admin")  # an admin: the stream's job is read from /jobs
            answer = client.post("/api/v1/recordings", json={"url": f"tcp://127.0.0.1:{port}", "room": "icu-3"})
            assert answer.status_code == 201, answer.text
            recording = answer.json()
            assert recording["status"] == "ingesting" and recording["source"] == f"tcp://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while _committed(settings, recording["id"]) < 6:  # clips are committed while the stream runs
                assert time.monotonic() < deadline, client.get("/api/v1/jobs", params={"kind": "stream"}).json()
                time.sleep(0.5)
            stopped = client.post(f"/api/v1/recordings/{recording['id']}/stop")
            assert stopped.status_code == 200
            deadline = time.monotonic() + 30
            while (job := _stream_job(client))["finished_at"] is None:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert job["status"] == "succeeded" and job["result"]["stopped"] is True
            final = client.get(f"/api/v1/recordings/{recording['id']}").json()
            assert final["status"] == "scored" and final["clip_count"] >= 6
            assert final["started_at"] is not None
            assert client.post(f"/api/v1/recordings/{recording['id']}/stop").status_code == 409
            events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()
            for event in events["data"]:  # live events carry explanations and a review clip cut from the archive
                assert event["clip_url"] and event["clip_start"] is not None and event["key_frame_url"]
                assert client.get(f"/api/v1/events/{event['id']}/explanations").json()["count"] == 3
                assert client.get(event["clip_url"]).status_code == 200
    finally:
        server.kill()
        server.wait()


def _committed(settings: Settings, recording_id: int) -> int:
    from sqlalchemy import func, select

    from server.db.session import make_engine
    from server.db.tables import Clip

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Clip).where(Clip.recording_id == recording_id)) or 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "concat:a|b", "ftp://example.org/x", "tcp://", "nonsense"])
def test_bad_stream_urls_are_refused(tmp_path: Path, url: str) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", broker_url=None))) as client:
        act_as(client, "clinician")
        answer = client.post("/api/v1/recordings", json={"url": url})
        assert answer.status_code == 422, url
        assert answer.json()["detail"]
        assert client.get("/api/v1/recordings").json()["count"] == 0
        both = client.post("/api/v1/recordings", json={"url": "tcp://127.0.0.1:1", "path": "x.mp4"})
        assert both.status_code == 422


def _stream_job(client: TestClient) -> dict:
    return client.get("/api/v1/jobs", params={"kind": "stream"}).json()["data"][0]
