"""Live streams archived as they are read, with real ffmpeg cameras on loopback: a stream event's review clip shows
the source at the event's times (across segment files, with an exact ``clip_start``), retention keeps exactly what
unreviewed events need, a server killed with SIGKILL mid-event resumes the archive after a gap and explains the
event from it, and a damaged segment costs only the media of the event that needed it."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from ingest.archive import ArchiveIndex, ArchiveSpec, read_index
from ingest.archive_reader import read_archive_frames
from ingest.archive_writer import StreamArchiveWriter
from ingest.clips import ClipSpec, IngestReport
from ingest.decode import read_frames
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips
from server.archive_retention import prune_stopped_archives
from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Clip, Event, EventStatus, Explanation, Recording, RecordingStatus
from server.housekeeper import Housekeeper
from server.main import create_app
from server.services.jobs import JobKind, create_job
from server.services.models import get_active_model
from server.services.recordings import create_recording
from server.services.streams import stop_stream
from server.settings import Settings
from server.stream_archive import StreamArchive
from tests.accounts import act_as
from tests.conftest import free_port
from tests.ingest.archive_support import fake_archive
from tests.server.faults_support import job_row, kill, process_env, start_server, stop, wait_for
from tests.server.test_stream import FFMPEG

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")

SEGMENT_SECONDS = 2.0


@pytest.fixture(scope="module")
def camera_video(ward_video, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The synthetic ward video as an IP camera sends it: H.264 with a keyframe every second."""
    out = tmp_path_factory.mktemp("camera") / "camera.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-i", str(ward_video.video), "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "18", "-g", "15", "-keyint_min", "15", "-sc_threshold", "0", str(out)], check=True)
    return out


def _serve(video: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-i", str(video), "-c", "copy", "-f", "mpegts",
                             f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _source_error(clip: bytes, start: float, offset: float, source: Path, scratch: Path) -> dict[float, float]:
    """Mean pixel difference between the review clip's frames and the synthetic source at recording time
    ``start + player time`` (source time = recording time - ``offset``), shifted by -1, 0 and +1 frame."""
    scratch.write_bytes(clip)
    with av.open(str(scratch)) as container:
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert decoded[0][0] == 0.0  # what a player shows at 0 s is the first frame
    height, width = decoded[0][1].shape[:2]
    fps = 15.0

    def error(shift: float) -> float:
        times = [start + t - offset + shift for t, _ in decoded]
        frames = read_frames(source, times, size=(width, height), backend="pyav")
        return float(np.mean([np.abs(f.astype(int) - s.astype(int)).mean() for (_, f), s in zip(decoded, frames,
                                                                                                strict=True)]))

    return {shift: error(shift) for shift in (-1 / fps, 0.0, 1 / fps)}


def _windows(index: ArchiveIndex, events: list[dict[str, Any]], pre: float, post: float) -> set[str]:
    """Segment files overlapping the review-clip windows of ``events``."""
    return {s.file for e in events for s in index.segments if s.overlaps(max(0.0, e["start"] - pre), e["end"] + post)}


def test_stream_events_get_review_clips_of_the_source_and_retention_keeps_what_they_need(
        tmp_path: Path, ward_video, camera_video: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    source = _serve(camera_video, port)
    # a 1-byte archive limit: the live reader removes every segment no event needs, as soon as it closes
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", stream_max_reconnects=3,
                        stream_allowed_networks=["127.0.0.1/32"], stream_archive_segment_seconds=SEGMENT_SECONDS,
                        stream_archive_max_bytes=1)
    try:
        with TestClient(create_app(settings)) as client:
            act_as(client, "clinician")
            recording = client.post("/api/v1/recordings", json={"url": f"tcp://127.0.0.1:{port}"}).json()
            rid = recording["id"]
            deadline = time.monotonic() + 120
            # the synthetic events end at 9.4 s and 19.5 s: stop once two are stored (or the stream ends)
            while len(client.get("/api/v1/events", params={"recording": rid}).json()["data"]) < 2:
                assert time.monotonic() < deadline, "no events while streaming"
                if source.poll() is not None:
                    break
                time.sleep(0.5)
            assert client.post(f"/api/v1/recordings/{rid}/stop").status_code == 200
            while client.get(f"/api/v1/recordings/{rid}").json()["status"] == "ingesting":
                assert time.monotonic() < deadline + 60, "the stream did not stop"
                time.sleep(0.2)
            events = client.get("/api/v1/events", params={"recording": rid}).json()["data"]
            assert events, "the model found no event on the stream"
            folder = settings.stream_archive_dir(rid)
            index = read_index(folder)
            offset = index.segments[0].clock.offset  # recording second of the camera's first frame
            for event in events:
                assert event["clip_url"] and event["clip_start"] is not None and event["media_error"] is None
                assert client.get(f"/api/v1/events/{event['id']}/explanations").json()["count"] == 3
                start = event["clip_start"]
                earliest = max(0.0, event["start"] - settings.review_clip_pre_seconds)
                assert earliest - 1e-6 <= start < earliest + 1 / 15 + 1e-6  # the first frame in the window
                clip = client.get(event["clip_url"])
                assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
                errors = _source_error(clip.content, start, offset, ward_video.video, tmp_path / "clip.mp4")
                assert errors[0.0] < errors[-1 / 15] and errors[0.0] < errors[1 / 15], errors  # to the frame
                assert errors[0.0] < 6.0, errors  # two H.264 generations (camera, review clip) and nothing else
                duration = event["end"] + settings.review_clip_post_seconds - start
                assert len(index.overlapping(start, start + duration)) >= 2  # cut across segment files

            # retention: everything but the windows of the (unreviewed) events is gone
            pre, post = settings.review_clip_pre_seconds, settings.review_clip_post_seconds
            kept = {s.file for s in index.segments}
            assert kept == _windows(index, events, pre, post)
            assert index.removed and {p.name for p in folder.glob("seg-*.ts")} == kept

            def only_its_own(event: dict[str, Any]) -> set[str]:
                return _windows(index, [event], pre, post) - _windows(index, [e for e in events if e != event],
                                                                        pre, post)

            reviewed = max(events, key=lambda e: len(only_its_own(e)))
            others = [e for e in events if e != reviewed]
            assert only_its_own(reviewed), [(e["start"], e["end"]) for e in events]
            answer = client.post(f"/api/v1/events/{reviewed['id']}/review", json={"decision": "confirmed"})
            assert answer.status_code == 200, answer.text
            factory = client.app.state.session_factory  # type: ignore[attr-defined]
            assert prune_stopped_archives(settings, factory) == len(only_its_own(reviewed))
            after = read_index(folder)
            # a reviewed event's clip exists: its segments may go now, but never those of one still unreviewed
            assert {s.file for s in after.segments} == _windows(index, others, pre, post)
            assert client.get(reviewed["clip_url"]).status_code == 200
    finally:
        source.kill()
        source.wait()


def _settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", commit_every=2,
                    score_batch_size=1, job_lease_seconds=600, job_heartbeat_seconds=1)


def _open_event_at(factory, recording_id: int, threshold: float) -> tuple[float, float] | None:  # type: ignore[no-untyped-def]
    """(start, end) of the newest clip when it scores over ``threshold`` and no event is stored yet: an event is
    open now."""
    with session_scope(factory) as session:
        if session.scalar(select(func.count()).select_from(Event).where(Event.recording_id == recording_id)):
            return None
        last = session.execute(select(Clip.start, Clip.end, Clip.scores).where(Clip.recording_id == recording_id)
                               .order_by(Clip.index.desc()).limit(1)).first()
    if last is None or max(last.scores.values()) < threshold:
        return None
    return last.start, last.end


def test_killed_mid_event_the_archive_resumes_and_explains_the_event(
        db_url: str, tmp_path: Path, camera_video: Path) -> None:
    settings = _settings(db_url, tmp_path)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with session_scope(factory) as session:  # as POST /recordings {"url": ...} leaves it
        recording = create_recording(session=session, source=url)
        recording.status = RecordingStatus.ingesting
        job = create_job(session=session, kind=JobKind.stream, recording_id=recording.id,
                         params={"url": settings.secret_box().encrypt(url), "source": url})
        rid, job_id = recording.id, job.id
    # 5-s segments against 2-s clips: a kill just after a clip is committed finds a segment part written
    env = process_env(settings, WARDWATCH_STREAM_ALLOWED_NETWORKS="127.0.0.1/32",
                      WARDWATCH_STREAM_BACKOFF_INITIAL_SECONDS="0.5", WARDWATCH_STREAM_ARCHIVE_SEGMENT_SECONDS="5")
    log = tmp_path / "server.log"
    source = _serve(camera_video, port)
    server = start_server(env, log)
    try:
        open_clip = wait_for(lambda: _open_event_at(factory, rid, settings.event_threshold), timeout=120,
                             process=server, log=log, interval=0.05)
        kill(server)  # mid-event: its frames were only in this process's memory, and on disk
        source.kill()
        source.wait()
        before = read_index(settings.stream_archive_dir(rid))
        assert before.segments and before.segments[-1].end is None  # the dead reader's segment is open
        killed_at = max(s.start for s in before.segments)
        source = _serve(camera_video, port)  # the camera is still there
        server = start_server(env, log)  # the restart resumes the stream and its archive
        wait_for(lambda: _stored_after(factory, rid, open_clip[0]), timeout=120, process=server, log=log)
        with session_scope(factory) as session:
            stop_stream(session=session, recording_id=rid)
        wait_for(lambda: job_row(factory, job_id).status != "cancelled", timeout=90, process=server, log=log)
    finally:
        stop(server)
        source.kill()
        source.wait()
    done = job_row(factory, job_id)
    assert done.status == "succeeded" and done.attempts == 2, done.error
    folder = settings.stream_archive_dir(rid)
    index = read_index(folder)
    recovered = [s for s in index.segments if s.recovered]
    assert len(recovered) == 1 and recovered[0].seq == before.segments[-1].seq and recovered[0].frames > 0
    gap_start, gap_end = index.gaps[0]  # the outage, in the index: from what the dead reader archived
    assert gap_start == pytest.approx(recovered[0].end, abs=1e-6) and gap_end > gap_start
    later = [s for s in index.segments if s.seq > recovered[0].seq]
    assert later and all(s.start >= gap_end - 1e-6 for s in later) and later[0].start > killed_at
    segments = index.segments  # in time order, never overlapping (the new reader starts after the archive's end)
    assert all(b.start >= a.end - 1e-9 for a, b in zip(segments, segments[1:], strict=False))
    assert done.result["gaps"][0][1] == pytest.approx(gap_end, abs=1e-6)

    with session_scope(factory) as session:
        event = session.scalars(select(Event).where(Event.recording_id == rid, Event.start <= open_clip[0],
                                                    Event.end >= open_clip[1])).one()
        explanations = session.scalar(select(func.count()).select_from(Explanation)
                                      .where(Explanation.event_id == event.id))
        assert event.media_error is None, event.media_error
        assert event.key_frame_path and explanations == 3 and event.maps_path  # explained, from the archive
        assert event.clip_path and event.clip_start is not None and event.clip_start <= event.start
        key_frame = np.asarray(Image.open(settings.data_dir / event.key_frame_path).convert("RGB"))
        key_time, key_path = event.key_frame_time, settings.data_dir / event.clip_path
    # the key frame is the archived frame at its time, pixel for pixel (the frames the dead reader scored)
    archived = read_archive_frames(folder, [key_time], size=(key_frame.shape[1], key_frame.shape[0]))[0]
    assert np.array_equal(archived, key_frame)
    with av.open(str(key_path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 15


def _stored_after(factory, recording_id: int, start: float) -> bool:  # type: ignore[no-untyped-def]
    """The event that was open at the kill is stored and its review clip is cut."""
    with session_scope(factory) as session:
        return bool(session.scalar(select(func.count()).select_from(Event).where(
            Event.recording_id == recording_id, Event.start <= start, Event.clip_path.is_not(None))))


def test_a_damaged_segment_costs_only_the_media_of_the_event_that_needed_it(
        tmp_path: Path, camera_video: Path) -> None:
    # short padding: each event's window lies inside one segment
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", review_clip_pre_seconds=0.5,
                        review_clip_post_seconds=0.5)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    with session_scope(factory) as session:
        recording = create_recording(session=session, source="tcp://camera:9000")
        recording.status = RecordingStatus.scored
        rid = recording.id
    folder = settings.stream_archive_dir(rid)
    port = free_port()
    source = _serve(camera_video, port)
    writer = StreamArchiveWriter(folder, ArchiveSpec(segment_seconds=SEGMENT_SECONDS))
    spec = StreamSpec(f"tcp://127.0.0.1:{port}", options={"analyzeduration": "300000", "probesize": "32768"})
    try:
        for clip in iter_stream_clips(spec, ClipSpec(2.0, 2.0, 8.0, (112, 112)), archive=writer,
                                      reconnect=ReconnectPolicy(0.1, 0.3, 40)):
            if clip.end > 5 * SEGMENT_SECONDS:
                break
    finally:
        writer.close()
        source.kill()
        source.wait()
    segments = read_index(folder).segments
    assert len(segments) >= 4
    damaged, healthy = segments[1], segments[3]
    data = (folder / damaged.file).read_bytes()
    (folder / damaged.file).write_bytes(data[: len(data) // 2])  # truncated, as a full disk or a bad copy leaves it
    with session_scope(factory) as session:
        model = get_active_model(session=session).id
        ids = []
        for segment in (damaged, healthy):
            middle = (segment.start + segment.span_end) / 2
            event = Event(recording_id=rid, label="fall", start=middle - 0.2, end=middle + 0.2, peak_score=0.9,
                          peak_time=middle, model_version_id=model, status=EventStatus.flagged)
            session.add(event)
            session.flush()
            ids.append(event.id)
    # a reader starting on this recording cuts the clips an earlier one left (as after a crash)
    archive = StreamArchive.open(settings, factory, rid, report=IngestReport(), name="camera")
    assert archive is not None
    archive.finish()
    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        bad, good = (client.get(f"/api/v1/events/{i}").json() for i in ids)
    assert bad["clip_url"] is None and bad["clip_start"] is None
    assert bad["media_error"].startswith(f"no review clip: segment {damaged.file} (recording ")
    assert "is corrupt or truncated" in bad["media_error"]
    assert good["media_error"] is None and good["clip_url"] and good["clip_start"] is not None
    assert healthy.start <= good["clip_start"] < healthy.span_end
    # nothing else was touched: every segment is still indexed and on disk (the damaged one kept for diagnosis)
    assert [s.file for s in read_index(folder).segments] == [s.file for s in segments]
    assert all((folder / s.file).is_file() for s in segments)
    with session_scope(factory) as session:
        assert session.get(Recording, rid).status == RecordingStatus.scored


def test_the_housekeeper_prunes_only_streams_no_reader_holds(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", stream_archive_max_hours=1)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    with session_scope(factory) as session:
        live, stopped = (create_recording(session=session, source=f"tcp://camera-{n}:9000") for n in (1, 2))
        create_job(session=session, kind=JobKind.stream, recording_id=live.id, params={})  # queued: a reader comes
        live_id, stopped_id = live.id, stopped.id
    long_ago = [(10.0 * k, 10.0 * (k + 1)) for k in range(3)]  # two days ago: past the 1-hour limit
    for rid in (live_id, stopped_id):
        # the last segment still open, as a reader that died (and was never followed) leaves it
        fake_archive(settings.stream_archive_dir(rid), long_ago, started=datetime.now(UTC) - timedelta(days=2),
                     open_last=True)
    Housekeeper(settings, factory).purge_once()  # what start-up and every purge interval run
    assert [s.seq for s in read_index(settings.stream_archive_dir(live_id)).segments] == [1, 2, 3]
    stopped_index = read_index(settings.stream_archive_dir(stopped_id))
    assert stopped_index.segments == [] and stopped_index.next_seq == 4
    # (these fake segment files are not video: the dead reader's open one could not be recovered, and says so)
    assert [r.reason for r in stopped_index.removed] == ["retention: older than 1 h",
                                                         "unreadable after its writer died"]
    assert not list(settings.stream_archive_dir(stopped_id).glob("seg-*.ts"))


def test_archiving_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", stream_archive=False)
    ctx = make_worker_context(settings)
    assert StreamArchive.open(settings, ctx.session_factory, 1, report=IngestReport(), name="camera") is None
    assert not settings.stream_archive_dir(1).exists()
