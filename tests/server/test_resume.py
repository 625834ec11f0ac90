"""Kill the scoring midway; on restart it continues from the last committed clip: none missing, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.session import make_engine
from server.db.tables import Clip, Recording, RecordingStatus
from server.main import create_app
from server.settings import Settings
from tests.accounts import act_as
from tests.server.conftest import upload, wait_for_tasks

WORKER = """
import sys
from server.bootstrap import make_worker_context
from server.worker.scoring import process_recording
from server.settings import Settings
ctx = make_worker_context(Settings(data_dir=sys.argv[1], commit_every=2, score_batch_size=1, device="cpu"))
process_recording(ctx, int(sys.argv[2]))
"""


def _clip_count(url: str, recording_id: int) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Clip).where(Clip.recording_id == recording_id)) or 0
    finally:
        engine.dispose()


def _queue_copy(settings: Settings, recording_id: int) -> int:
    """A second recording of the same file, queued as an upload leaves it, for the killed worker to take."""
    engine = make_engine(settings.sqlalchemy_url)
    with Session(engine) as session:
        original = session.get(Recording, recording_id)
        assert original is not None
        copy = Recording(source="copy.mp4", path=original.path, status=RecordingStatus.queued,
                         duration=original.duration, width=original.width, height=original.height,
                         started_at=original.started_at)
        session.add(copy)
        session.commit()
        copy_id = copy.id
    engine.dispose()
    return copy_id


def test_killed_scoring_resumes_without_gaps_or_duplicates(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, broker_url=None, device="cpu", commit_every=2)
    url = settings.sqlalchemy_url
    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        reference = upload(client, ward_video.video).json()
        wait_for_tasks(client)
        expected = client.get(f"/api/v1/recordings/{reference['id']}").json()["clip_count"]
        expected_events = client.get("/api/v1/events", params={"recording": reference["id"]}).json()
    victim = {"id": _queue_copy(settings, reference["id"])}  # registered, not yet scored

    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(victim["id"])],
                              env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _clip_count(url, victim["id"]) < 4:
        assert worker.poll() is None, "worker finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    committed = _clip_count(url, victim["id"])
    assert 4 <= committed < expected

    with TestClient(create_app(settings)) as client:  # restart: embedded mode resumes in-flight recordings
        act_as(client, "clinician")
        wait_for_tasks(client)
        recording = client.get(f"/api/v1/recordings/{victim['id']}").json()
        assert recording["status"] == "scored" and recording["clip_count"] == expected
        events = client.get("/api/v1/events", params={"recording": victim["id"]}).json()
        assert [(e["label"], e["start"], e["end"]) for e in events["data"]] == [
            (e["label"], e["start"], e["end"]) for e in expected_events["data"]
        ]
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(Clip.index, Clip.start, Clip.scores).where(Clip.recording_id == victim["id"])
                            .order_by(Clip.index)).all()
        reference_rows = conn.execute(select(Clip.index, Clip.start, Clip.scores)
                                      .where(Clip.recording_id == reference["id"]).order_by(Clip.index)).all()
    engine.dispose()
    assert [r.index for r in rows] == list(range(expected))
    assert [r.start for r in rows] == [r.start for r in reference_rows]
    for mine, theirs in zip(rows, reference_rows, strict=True):
        for label, score in theirs.scores.items():
            assert abs(mine.scores[label] - score) < 1e-4
