"""Recordings from the server's import directory and from the watch folder go through the same checks."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.accounts import act_as
from tests.server.conftest import wait_for_tasks


def test_import_from_the_import_directory_only(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "archive"
    (root / "room12").mkdir(parents=True)
    shutil.copy(ward_video.video, root / "room12" / "night.mp4")
    secret = tmp_path / "secret.mp4"
    shutil.copy(ward_video.video, secret)
    os.symlink(secret, root / "escape.mp4")
    (root / "notes.mp4").write_text("not a video at all")

    shutil.copy(ward_video.video, root / "room12" / "cam_20260301_081500.mp4")
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", import_dir=root,
                        filename_time_pattern="%Y%m%d_%H%M%S")
    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        named = client.post("/api/v1/recordings", json={"path": "room12/cam_20260301_081500.mp4"}).json()
        assert named["started_at"] == "2026-03-01T08:15:00Z"  # from the file name, over container metadata
        answer = client.post("/api/v1/recordings", json={"path": "room12/night.mp4", "room": "12",
                                                          "allow_duplicate": True})
        assert answer.status_code == 201, answer.text
        recording = answer.json()
        assert recording["source"] == "room12/night.mp4" and recording["room"] == "12"
        wait_for_tasks(client)
        assert client.get(f"/api/v1/recordings/{recording['id']}").json()["status"] == "scored"
        assert (root / "room12" / "night.mp4").exists()  # imported in place, not moved

        for path in ("../secret.mp4", str(secret), "escape.mp4", "room12/../../secret.mp4", "missing.mp4"):
            refused = client.post("/api/v1/recordings", json={"path": path})
            assert refused.status_code == 422, path
            assert refused.json()["detail"], path
        bad = client.post("/api/v1/recordings", json={"path": "notes.mp4"})
        assert bad.status_code == 422 and "marked failed" in bad.json()["detail"]
        again = client.post("/api/v1/recordings", json={"path": "room12/night.mp4"})
        assert again.status_code == 409
        assert recording["started_at"] == "2024-01-15T08:00:00Z"  # no match in the name: container metadata

    disabled = Settings(data_dir=tmp_path / "d2", broker_url=None)
    with TestClient(create_app(disabled)) as client:
        act_as(client, "clinician")
        answer = client.post("/api/v1/recordings", json={"path": "room12/night.mp4"})
        assert answer.status_code == 403 and "WARDWATCH_IMPORT_DIR" in answer.json()["detail"]


def test_watch_folder_ingests_each_file_once(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    watch = tmp_path / "inbox"
    watch.mkdir()
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", watch_dir=watch,
                        watch_interval=0.1, watch_settle_seconds=0.3)
    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        growing = watch / "cam1.mp4"
        data = ward_video.video.read_bytes()
        with growing.open("wb") as handle:  # a file still being written (slowly, steadily) is waited for
            step = len(data) // 10
            for start in range(0, len(data), step):
                handle.write(data[start:start + step])
                handle.flush()
                time.sleep(0.12)
                assert client.get("/api/v1/recordings").json()["count"] == 0
        (watch / "broken.mp4").write_text("this is not a video")
        deadline = time.monotonic() + 30
        while client.get("/api/v1/recordings").json()["count"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        wait_for_tasks(client)
        time.sleep(0.5)  # more passes: nothing is ingested twice
        recordings = {r["source"]: r for r in client.get("/api/v1/recordings").json()["data"]}
        assert set(recordings) == {"cam1.mp4", "broken.mp4"}
        assert recordings["cam1.mp4"]["status"] == "scored"
        assert recordings["broken.mp4"]["status"] == "failed"
        assert (watch / "failed" / "broken.mp4").exists()
        assert "not a video" in (watch / "failed" / "broken.mp4.reason.txt").read_text().lower()

    with TestClient(create_app(settings)) as client:  # a restart does not ingest cam1.mp4 again
        act_as(client, "clinician")
        time.sleep(0.8)
        assert client.get("/api/v1/recordings").json()["count"] == 2
