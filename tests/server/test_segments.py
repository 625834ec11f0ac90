"""A recording scored as segment jobs gives exactly the clips and events of one pass -- with a segment boundary
inside a detected event -- on SQLite and PostgreSQL; segments run in parallel in the embedded pool; progress is
the fraction of clips committed across segments; a segment or the finalisation run twice changes no row; a
failed segment fails its recording."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, ModelVersion, Recording, RecordingStatus
from server.pipeline import WorkerContext
from server.settings import Settings
from server.worker.dispatch import EmbeddedDispatcher
from server.worker.finalise import finalise
from server.worker.scoring import process_recording, run_segment
from server.worker.segments import expected_clips, load_target, plan_segments
from tests.server.faults_support import register_copy
from tests.server.segments_support import (
    assert_same_outcome,
    boundary_inside_an_event,
    jobs_of,
    outcome,
    row_counts,
)

STRIDE = 2.0  # the demo model's clip length, the default stride


def _settings(db_url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", commit_every=3,
                    **extra)  # type: ignore[arg-type]


def _single_pass(ctx: WorkerContext, video: Path) -> tuple[int, object]:
    """The reference: the whole recording scored by one task in one piece."""
    recording_id, job_id = register_copy(ctx.settings, ctx.session_factory, video, "single.mp4")
    process_recording(ctx, recording_id, job_id)
    assert [(j.kind, j.status) for j in jobs_of(ctx.session_factory, recording_id)] == [("score", JobStatus.succeeded)]
    return recording_id, outcome(ctx.session_factory, recording_id)


def test_segments_in_parallel_give_the_clips_and_events_of_one_pass(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    reference_ctx = make_worker_context(_settings(db_url, tmp_path))
    _, reference = _single_pass(reference_ctx, ward_video.video)
    boundary_clip, boundary_time = boundary_inside_an_event(reference)  # type: ignore[arg-type]

    settings = _settings(db_url, tmp_path, segment_seconds=boundary_clip * STRIDE, score_batch_wait_seconds=0.2)
    ctx = make_worker_context(settings)
    dispatcher = EmbeddedDispatcher(ctx, workers=2)  # two segments at a time, one batcher
    try:
        recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "segmented.mp4")
        dispatcher.process_recording(recording_id, job_id)
        dispatcher.wait(timeout=300)
    finally:
        dispatcher.shutdown()
        ctx.close()
    mine = outcome(ctx.session_factory, recording_id)
    assert_same_outcome(mine, reference)  # type: ignore[arg-type]
    assert any(start < boundary_time < end for _, start, end, *_ in mine.events), "no event crosses the boundary"

    jobs = jobs_of(ctx.session_factory, recording_id)
    parent, segments = jobs[0], jobs[1:]
    assert parent.kind == "score" and parent.status == JobStatus.succeeded and parent.progress == 1.0
    assert parent.result["clips"] == len(mine.clips) and parent.result["events"] == len(mine.events)
    assert len(segments) == parent.params["segments"] >= 3
    assert all(s.kind == "segment" and s.parent_id == parent.id and s.status == JobStatus.succeeded
               and s.attempts == 1 for s in segments)
    assert [s.params["first"] for s in segments] == [n * boundary_clip for n in range(len(segments))]
    assert sum(s.result["clips"] for s in segments) == len(mine.clips)  # each clip by exactly one segment
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        assert recording.status == RecordingStatus.scored and recording.clip_count == len(mine.clips)


def test_progress_is_the_fraction_of_clips_committed_across_segments(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    """Segments handed out but run by hand, out of order: the recording's progress counts every segment's clips;
    the last segment to end (not the last by number) finalises, once; running any of them again adds nothing."""
    settings = _settings(db_url, tmp_path, segment_seconds=10 * STRIDE)
    ctx = make_worker_context(settings)
    handed_out: list[int] = []
    ctx.dispatch_segment = handed_out.append  # a queue that only remembers
    recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "progress.mp4")
    process_recording(ctx, recording_id, job_id)
    jobs = jobs_of(ctx.session_factory, recording_id)
    assert [j.id for j in jobs[1:]] == handed_out and len(handed_out) == 2
    parent = jobs[0]
    assert parent.status == JobStatus.running and parent.lease_owner is None  # waits on its segments
    with session_scope(ctx.session_factory) as session:
        version = session.get(ModelVersion, parent.params["model_version_id"])
        expected = load_target(ctx, session, session.get(Recording, recording_id), version).expected

    run_segment(ctx, handed_out[1])  # the second half first
    after_second = jobs_of(ctx.session_factory, recording_id)
    second_clips = after_second[2].result["clips"]
    assert after_second[0].status == JobStatus.running
    assert after_second[0].progress == pytest.approx(second_clips / expected)
    run_segment(ctx, handed_out[0])  # the last to end: it finalises
    done = jobs_of(ctx.session_factory, recording_id)
    assert done[0].status == JobStatus.succeeded and done[0].progress == 1.0
    assert done[0].result["clips"] == second_clips + done[1].result["clips"]
    with session_scope(ctx.session_factory) as session:
        assert session.get(Recording, recording_id).status == RecordingStatus.scored

    before, first = row_counts(ctx.session_factory), outcome(ctx.session_factory, recording_id)
    assert first.events, "the recording should have events to store twice"
    for segment_job_id in handed_out:  # duplicate messages of finished segments
        run_segment(ctx, segment_job_id)
    with session_scope(ctx.session_factory) as session:  # a segment re-queued by mistake runs again in full
        session.execute(update(Job).where(Job.id == handed_out[0]).values(status=JobStatus.queued))
    run_segment(ctx, handed_out[0])
    process_recording(ctx, recording_id, job_id)  # a duplicate of the recording's message
    # the finalisation itself again, without any job guard: the event rows are unique by constraint
    version_id = done[0].params["model_version_id"]
    finalise(ctx, recording_id, version_id, None, [])
    assert row_counts(ctx.session_factory) == before
    assert outcome(ctx.session_factory, recording_id) == first


def test_a_failed_segment_fails_its_recording(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path, segment_seconds=6 * STRIDE)
    ctx = make_worker_context(settings)
    handed_out: list[int] = []
    ctx.dispatch_segment = handed_out.append
    recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "broken.mp4")
    process_recording(ctx, recording_id, job_id)
    assert len(handed_out) >= 3
    with session_scope(ctx.session_factory) as session:  # the second segment's range is nonsense
        session.execute(update(Job).where(Job.id == handed_out[1]).values(params={"first": "x", "end": None}))
    run_segment(ctx, handed_out[0])
    run_segment(ctx, handed_out[1])
    jobs = {j.id: j for j in jobs_of(ctx.session_factory, recording_id)}
    assert jobs[handed_out[1]].status == JobStatus.failed and "ValueError" in jobs[handed_out[1]].error
    assert jobs[job_id].status == JobStatus.failed and jobs[job_id].error.startswith("a segment failed")
    assert all(jobs[i].status == JobStatus.cancelled for i in handed_out[2:])  # never started
    assert jobs[handed_out[0]].status == JobStatus.succeeded
    with session_scope(ctx.session_factory) as session:
        assert session.get(Recording, recording_id).status == RecordingStatus.failed
    run_segment(ctx, handed_out[2])  # a late message of a cancelled segment: nothing runs
    assert jobs_of(ctx.session_factory, recording_id)[-1].status == JobStatus.cancelled


def test_the_plan_cuts_on_the_stride_grid() -> None:
    from ingest.clips import ClipSpec

    spec = ClipSpec(clip_seconds=2.0, stride_seconds=2.0, sample_fps=4.0, size=(80, 60))
    assert expected_clips(600.0, spec) == 300 and expected_clips(1.9, spec) == 0
    plan = plan_segments(duration=600.0, spec=spec, segment_seconds=300.0)
    assert [(s.first, s.end) for s in plan] == [(0, 150), (150, None)]  # the last one open-ended
    assert [(s.first, s.end) for s in plan_segments(duration=36.0, spec=spec, segment_seconds=300.0)] == [(0, None)]
    overlapping = ClipSpec(clip_seconds=2.0, stride_seconds=1.0, sample_fps=4.0, size=(80, 60))
    assert [(s.first, s.end) for s in plan_segments(duration=10.0, spec=overlapping, segment_seconds=4.0)] == [
        (0, 4), (4, 8), (8, None)]  # 9 clips (starts 0..8 s), 4 s of starts each
