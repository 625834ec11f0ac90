"""A clinician-added event on a real (synthetic) scored recording: it gets a playable review clip like the
model's events, and the fine-tune data (``build_finetune_data``) takes the clips overlapping it as positives for
its label, exactly the clips and labels a confirmed flag over the same range gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from ingest.decode import read_frames
from server.db.session import session_scope
from server.db.tables import Clip, Event, Recording, RecordingStatus
from server.services.models import get_active_model
from server.training_data import build_finetune_data
from server.worker.scoring import process_recording
from tests.server.conftest import upload, wait_for_tasks


def _training_set(client: TestClient, recording_id: int) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """The labelled clips (training and validation alike) as (frame times, label vector), sorted."""
    with session_scope(client.app.state.session_factory) as session:
        base = get_active_model(session=session)
        assert base is not None
        data = build_finetune_data(session=session, data_dir=client.app.state.settings.data_dir, base=base,
                                   mode="supervised", recording_ids=[recording_id])
        return sorted((tuple(c.times or ()), tuple(c.labels or ())) for c in data.labelled + data.validation)


def _overlapping_clips(client: TestClient, recording_id: int, start: float, end: float) -> set[tuple[float, ...]]:
    with session_scope(client.app.state.session_factory) as session:
        clips = session.query(Clip).filter(Clip.recording_id == recording_id, Clip.start < end, Clip.end > start)
        return {tuple(c.timestamps) for c in clips}


def _assert_clip_start_exact(client: TestClient, recording_id: int, event: dict[str, Any], clip: bytes) -> None:
    """clip_start is set, and player time t shows recording time clip_start + t to the frame (as
    tests/server/test_event_maps.py checks for the pipeline's events)."""
    settings = client.app.state.settings
    start = event["clip_start"]
    earliest = max(0.0, event["start"] - settings.review_clip_pre_seconds)
    assert start is not None and earliest - 1e-6 <= start < earliest + 1 / 5, event
    with session_scope(client.app.state.session_factory) as session:
        video = settings.data_dir / session.get(Recording, recording_id).path
        assert session.get(Event, event["id"]).clip_start == start
    path = Path(settings.data_dir) / "clinician-clip-copy.mp4"
    path.write_bytes(clip)
    with av.open(str(path)) as container:
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(container.streams.video[0])]
    assert decoded[0][0] == 0.0
    height, width = decoded[0][1].shape[:2]
    times = [t for t, _ in decoded]
    fps = (len(times) - 1) / (times[-1] - times[0])

    def error(offset: float) -> float:
        source = read_frames(video, [start + t + offset for t in times], size=(width, height), backend="pyav")
        return float(np.mean([np.abs(f.astype(int) - s.astype(int)).mean()
                              for (_, f), s in zip(decoded, source, strict=True)]))

    exact = error(0.0)
    assert exact < error(-1 / fps) and exact < error(1 / fps), "clip_start is off by at least one frame"
    assert exact < 4.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the scoring is what is slow; SQL is the same
def test_marked_event_gets_a_clip_and_is_a_positive_like_a_confirmed_flag(client: TestClient, ward_video: Any
                                                                          ) -> None:
    recording = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    recording_id = recording["id"]
    flagged = client.get("/api/v1/events", params={"recording": recording_id, "limit": 500}).json()["data"]
    # a range away from every flag, so it is the only reviewed event (flags stay unreviewed: not training data)
    start, end = next((s, s + 3.0) for s in range(2, 30) if all(s + 3.0 <= e["start"] - 1 or s >= e["end"] + 1
                                                                  for e in flagged))
    answer = client.post(f"/api/v1/recordings/{recording_id}/events",
                         json={"label": "fall", "start": start, "end": end, "note": "the model missed it"})
    assert answer.status_code == 201, answer.text
    event = answer.json()
    assert event["clip_url"] == f"/api/v1/events/{event['id']}/clip.mp4"
    clip = client.get(event["clip_url"])
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4" and clip.content[4:8] == b"ftyp"
    _assert_clip_start_exact(client, recording_id, event, clip.content)

    marked = _training_set(client, recording_id)
    class_names = list(client.get("/api/v1/models").json()[0]["class_names"])
    positive = tuple(1.0 if n == "fall" else 0.0 for n in class_names)
    assert marked and {labels for _times, labels in marked} == {positive}
    assert {times for times, _labels in marked} == _overlapping_clips(client, recording_id, start, end)

    # The same range as a model flag confirmed by a clinician: the same training clips, the same labels.
    with session_scope(client.app.state.session_factory) as session:
        session.execute(delete(Event).where(Event.id == event["id"]))
        session.add(Event(recording_id=recording_id, label="fall", start=float(start), end=float(end),
                          peak_score=0.9, peak_time=start + 1.5, model_version_id=event["model_version_id"]))
    flag = client.get("/api/v1/events", params={"recording": recording_id, "source": "model", "sort": "time",
                                                "limit": 500}).json()["data"]
    mine = next(e for e in flag if e["start"] == start and e["end"] == end)
    assert client.post(f"/api/v1/events/{mine['id']}/review", json={"decision": "confirmed"}).status_code == 200
    assert _training_set(client, recording_id) == marked

    # A run of the pipeline over the recording again (an interrupted run resumed) redoes the model's events only.
    kept = client.post(f"/api/v1/recordings/{recording_id}/events", json={"label": "fall", "start": start, "end": end})
    assert kept.status_code == 201, kept.text
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Recording).where(Recording.id == recording_id)
                        .values(status=RecordingStatus.ingesting))
    process_recording(client.app.state.worker_context, recording_id)
    assert client.get(f"/api/v1/events/{kept.json()['id']}").json()["source"] == "clinician"
    assert client.get(f"/api/v1/recordings/{recording_id}").json()["status"] == "scored"
