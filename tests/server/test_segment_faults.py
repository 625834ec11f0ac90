"""Leases cover segment jobs: a worker process killed with SIGKILL mid-segment loses its segment to another worker
once the lease expires (the recording's scoring job waits meanwhile, untouched), and the recording ends with
exactly the clips and events of a clean run; a segment that loses its worker every time fails its recording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Clip, Job, JobStatus, Recording, RecordingStatus
from server.job_sweeper import JobSweeper
from server.services import jobs
from server.services.job_recovery import recover_lost_jobs
from server.settings import Settings
from server.worker.dispatch import EmbeddedDispatcher
from server.worker.scoring import process_recording, run_segment
from tests.server.faults_support import kill, process_env, register_copy, wait_for
from tests.server.segments_support import assert_same_outcome, jobs_of, outcome

#: a worker process that takes one segment job, as a Celery worker's score_segment task would, stalled right
#: after its first committed batch, so that the kill lands mid-segment however fast the
#: machine is (its heartbeat goes on: only the kill makes its lease run out)
STALLING_SEGMENT_WORKER = """
import sys, time
from server.bootstrap import make_worker_context
from server.settings import Settings
from server.worker import segments
from server.worker.scoring import run_segment
commit = segments.commit_clips
def commit_then_stall(*args, **kwargs):
    commit(*args, **kwargs)
    args[0].commit()
    time.sleep(3600)
segments.commit_clips = commit_then_stall
run_segment(make_worker_context(Settings()), int(sys.argv[1]))
"""
#: a last segment's worker that stalls when it starts rendering the recording's event media (as finaliser)
STALLING_FINALISER = """
import contextlib, sys, time
from server.bootstrap import make_worker_context
from server.settings import Settings
from server.worker import finalise
from server.worker.scoring import run_segment
@contextlib.contextmanager
def stall():
    time.sleep(3600)
    yield
finalise.RENDER_LOCK = stall()
run_segment(make_worker_context(Settings()), int(sys.argv[1]))
"""


def _settings(db_url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", commit_every=2,
                    score_batch_size=1, segment_seconds=20.0, job_lease_seconds=2, job_heartbeat_seconds=0.5,
                    **extra)  # type: ignore[arg-type]


def _clips_from(factory, recording_id: int, first: int) -> int:  # type: ignore[no-untyped-def]
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(Clip).where(
            Clip.recording_id == recording_id, Clip.index >= first)) or 0


def test_a_killed_workers_segment_is_handed_on(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    reference_id, reference_job = register_copy(settings, factory, ward_video.video, "reference.mp4")
    process_recording(ctx, reference_id, reference_job)  # no one to hand segments to: one piece
    reference = outcome(factory, reference_id)

    handed_out: list[int] = []
    ctx.dispatch_segment = handed_out.append  # the queue: the test decides who takes what
    victim, job_id = register_copy(settings, factory, ward_video.video, "victim.mp4")
    process_recording(ctx, victim, job_id)
    assert len(handed_out) == 2
    second = jobs_of(factory, victim)[2]
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-c", STALLING_SEGMENT_WORKER, str(second.id)],
                              env=process_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    first_of_second = second.params["first"]
    wait_for(lambda: _clips_from(factory, victim, first_of_second) >= 2, timeout=180, process=worker, log=log)
    kill(worker)  # mid-segment
    killed = {job.id: job for job in jobs_of(factory, victim)}
    assert killed[second.id].status == JobStatus.running and killed[job_id].status == JobStatus.running

    other = make_worker_context(settings)
    dispatcher = EmbeddedDispatcher(other)  # the other worker, its segments in its pool
    sweeper = JobSweeper(settings, factory, dispatcher)
    try:
        wait_for(sweeper.sweep_once, timeout=60, interval=0.2)  # the dead segment's lease ran out: handed on
        assert jobs_of(factory, victim)[0].status == JobStatus.running  # the waiting scoring job is left alone
        dispatcher.score_segment(handed_out[0])  # the first segment's message reaches this worker too
        dispatcher.wait(timeout=300)
    finally:
        dispatcher.shutdown()
        other.close()
    done = {job.id: job for job in jobs_of(factory, victim)}
    assert done[job_id].status == JobStatus.succeeded and done[job_id].attempts == 1
    assert done[second.id].status == JobStatus.succeeded and done[second.id].attempts == 2
    assert done[handed_out[0]].status == JobStatus.succeeded and done[handed_out[0]].attempts == 1
    assert_same_outcome(outcome(factory, victim), reference)


def test_a_finaliser_killed_mid_media_is_replaced_and_the_events_are_stored_once(db_url: str, tmp_path: Path,
                                                                                ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    reference_id, reference_job = register_copy(settings, factory, ward_video.video, "reference.mp4")
    process_recording(ctx, reference_id, reference_job)
    reference = outcome(factory, reference_id)
    assert reference.events

    handed_out: list[int] = []
    ctx.dispatch_segment = handed_out.append
    victim, job_id = register_copy(settings, factory, ward_video.video, "victim.mp4")
    process_recording(ctx, victim, job_id)
    run_segment(ctx, handed_out[0])
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-c", STALLING_FINALISER, str(handed_out[1])],
                              env=process_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    # the last segment's worker takes the scoring job's lease to finalise: kill it while it renders the media
    wait_for(lambda: _held_by(factory, job_id, worker.pid), timeout=180, process=worker, log=log)
    kill(worker)
    assert outcome(factory, victim).events == []  # nothing of the finalisation was committed

    dispatcher = EmbeddedDispatcher(make_worker_context(settings))
    sweeper = JobSweeper(settings, factory, dispatcher)
    try:
        wait_for(sweeper.sweep_once, timeout=60, interval=0.2)  # the lease ran out, no segment live: re-queued
        dispatcher.wait(timeout=300)
    finally:
        dispatcher.shutdown()
    parent = jobs_of(factory, victim)[0]
    assert parent.status == JobStatus.succeeded and parent.attempts == 2
    assert_same_outcome(outcome(factory, victim), reference)


def _held_by(factory, job_id: int, pid: int) -> bool:  # type: ignore[no-untyped-def]
    with session_scope(factory) as session:
        owner = session.get(Job, job_id).lease_owner
    return owner is not None and owner.split(":")[1] == str(pid)


def test_a_segment_that_loses_its_worker_every_time_fails_its_recording(db_url: str, tmp_path: Path,
                                                                        ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path, job_max_attempts=1)
    ctx = make_worker_context(settings)
    handed_out: list[int] = []
    ctx.dispatch_segment = handed_out.append
    recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "poison.mp4")
    process_recording(ctx, recording_id, job_id)
    with session_scope(ctx.session_factory) as session:  # a worker takes the first segment, then dies
        jobs.start_job(session=session, job_id=handed_out[0], owner="elsewhere:1:dead", lease_seconds=0.05)
    wait_for(lambda: _reclaimed(settings, ctx.session_factory), timeout=30, interval=0.1)
    by_id = {job.id: job for job in jobs_of(ctx.session_factory, recording_id)}
    assert by_id[handed_out[0]].status == JobStatus.failed and by_id[handed_out[0]].error.startswith("worker lost")
    assert by_id[job_id].status == JobStatus.failed and by_id[job_id].error.startswith("segment 0: worker lost")
    assert by_id[handed_out[1]].status == JobStatus.cancelled  # never started: it never will
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        assert recording.status == RecordingStatus.failed and recording.error.startswith("worker lost")


def _reclaimed(settings: Settings, factory) -> bool:  # type: ignore[no-untyped-def]
    with session_scope(factory) as session:
        return bool(recover_lost_jobs(session=session, settings=settings).failed)
