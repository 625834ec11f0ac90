"""Faults with real processes on loopback, on SQLite and PostgreSQL: a server killed with SIGKILL mid-scoring and
restarted, a worker killed and its job handed on once its lease expired, a recording that kills its worker
every time, a live stream whose server was killed. The database is read directly after each step."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Clip, Event, Job, Recording, RecordingStatus
from server.job_sweeper import JobSweeper
from server.pipeline import WorkerContext
from server.services.jobs import JobKind, create_job
from server.services.recordings import create_recording
from server.services.streams import stop_stream
from server.settings import Settings
from server.worker.dispatch import EmbeddedDispatcher
from server.worker.scoring import process_recording
from tests.conftest import free_port
from tests.server.faults_support import (
    clip_count,
    job_row,
    kill,
    process_env,
    register_copy,
    same_outcome,
    scoring_outcome,
    start_server,
    start_worker,
    stop,
    wait_for,
)
from tests.server.test_stream import FFMPEG


def _settings(db_url: str, tmp_path: Path, **extra: float | int) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", commit_every=2,
                    score_batch_size=1, **extra)  # type: ignore[arg-type]


def _context(settings: Settings) -> WorkerContext:
    return make_worker_context(settings)


def _reference(ctx: WorkerContext, video: Path) -> tuple[list, list]:
    """A clean run of the same file in this process: what every faulty run must end with."""
    recording_id, job_id = register_copy(ctx.settings, ctx.session_factory, video, "reference.mp4")
    process_recording(ctx, recording_id, job_id)
    assert job_row(ctx.session_factory, job_id).status == "succeeded"
    return scoring_outcome(ctx.session_factory, recording_id)


def _jobs_of(factory: sessionmaker[Session], recording_id: int) -> list[tuple[str, str]]:
    with session_scope(factory) as session:
        return [(job.kind, job.status.value) for job in
                session.scalars(select(Job).where(Job.recording_id == recording_id).order_by(Job.id))]


def test_server_killed_mid_scoring_closes_its_job_and_resumes(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    # A lease far longer than the test: only the start-up's dead-pid check can take the job back in time.
    settings = _settings(db_url, tmp_path, job_lease_seconds=600, job_heartbeat_seconds=1)
    ctx = _context(settings)
    factory = ctx.session_factory
    reference = _reference(ctx, ward_video.video)
    victim, job_id = register_copy(settings, factory, ward_video.video, "victim.mp4")
    env, log = process_env(settings), tmp_path / "server.log"

    server = start_server(env, log)  # start-up hands the queued job to its embedded worker
    wait_for(lambda: clip_count(factory, victim) >= 4, timeout=180, process=server, log=log)
    kill(server)
    killed = job_row(factory, job_id)
    assert killed.status == "running" and killed.lease_owner.split(":")[1] == str(server.pid)
    assert 4 <= clip_count(factory, victim) < len(reference[0])

    server = start_server(env, log)  # the restart
    try:
        wait_for(lambda: job_row(factory, job_id).status in ("succeeded", "failed"), timeout=240, process=server,
                 log=log)
    finally:
        stop(server)
    done = job_row(factory, job_id)
    assert done.status == "succeeded" and done.attempts == 2, done.error
    assert _jobs_of(factory, victim) == [("score", "succeeded")]  # the old job closed, no second job beside it
    with session_scope(factory) as session:
        assert session.get(Recording, victim).status == RecordingStatus.scored
    same_outcome(scoring_outcome(factory, victim), reference)


def test_a_dead_workers_lease_expires_and_another_worker_finishes(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path, job_lease_seconds=2, job_heartbeat_seconds=0.5)
    ctx = _context(settings)
    factory = ctx.session_factory
    reference = _reference(ctx, ward_video.video)
    victim, job_id = register_copy(settings, factory, ward_video.video, "victim.mp4")
    log = tmp_path / "worker.log"
    worker = start_worker(process_env(settings), victim, job_id, log)
    wait_for(lambda: clip_count(factory, victim) >= 4, timeout=180, process=worker, log=log)
    kill(worker)
    assert job_row(factory, job_id).status == "running"

    dispatcher = EmbeddedDispatcher(ctx)  # the other worker
    sweeper = JobSweeper(settings, factory, dispatcher)
    killed_at = time.monotonic()
    wait_for(sweeper.sweep_once, timeout=60, interval=0.2)  # the database notices, not a broker timeout
    noticed = time.monotonic() - killed_at
    assert noticed < 30, f"a lost worker noticed after {noticed:.1f} s with a 2 s lease"
    dispatcher.wait(timeout=240)
    dispatcher.shutdown()
    done = job_row(factory, job_id)
    assert done.status == "succeeded" and done.attempts == 2 and done.lease_owner is None
    same_outcome(scoring_outcome(factory, victim), reference)


def test_a_recording_that_kills_its_worker_ends_failed_after_the_bounded_attempts(
        db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(db_url, tmp_path, job_lease_seconds=2, job_heartbeat_seconds=0.5, job_max_attempts=2)
    ctx = _context(settings)
    factory = ctx.session_factory
    poison, job_id = register_copy(settings, factory, ward_video.video, "poison.mp4")
    workers = _WorkerProcesses(process_env(settings), tmp_path / "worker.log")
    sweeper = JobSweeper(settings, factory, workers)  # hands a re-queued job to a new worker process
    workers.process_recording(poison, job_id)  # the first hand-over, as the upload does
    for attempt in (1, 2):
        wait_for(lambda n=attempt: _running(factory, job_id, attempt=n), timeout=120, process=workers.started[-1],
                 log=workers.log)
        kill(workers.started[-1])  # it dies on this recording, every time
        if attempt == 1:
            wait_for(sweeper.sweep_once, timeout=60, interval=0.2)  # re-queued, handed to a second worker
        else:
            wait_for(lambda: sweeper.sweep_once() == 0 and job_row(factory, job_id).status == "failed", timeout=60,
                     interval=0.2)
    assert len(workers.started) == 2  # no third try
    failed = job_row(factory, job_id)
    assert failed.error is not None and failed.error.startswith("worker lost") and "2 attempts" in failed.error
    with session_scope(factory) as session:
        recording = session.get(Recording, poison)
        assert recording.status == RecordingStatus.failed and recording.error.startswith("worker lost")
    before = clip_count(factory, poison)
    process_recording(ctx, poison, job_id)  # a late duplicate message: the job is over, nothing runs
    assert job_row(factory, job_id).status == "failed" and clip_count(factory, poison) == before
    other, other_job = register_copy(settings, factory, ward_video.video, "next.mp4")
    process_recording(ctx, other, other_job)  # the queue goes on
    assert job_row(factory, other_job).status == "succeeded"


def _running(factory: sessionmaker[Session], job_id: int, *, attempt: int) -> bool:
    row = job_row(factory, job_id)
    return row.status == "running" and row.attempts == attempt


class _WorkerProcesses:
    """Hands each scoring job to a new worker process (as a Celery worker would take it), so the test can kill
    every attempt."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.started: list[subprocess.Popen[bytes]] = []

    def process_recording(self, recording_id: int, job_id: int | None) -> None:
        assert job_id is not None
        self.started.append(start_worker(self.env, recording_id, job_id, self.log))


def _serve_stream(video: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-i", str(video), "-c", "copy", "-f", "mpegts",
                             f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_a_live_stream_resumes_after_its_server_was_killed(db_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    """Killed twice: each restart resumes the stream after the clips kept, and both outages stay recorded."""
    settings = _settings(db_url, tmp_path, job_lease_seconds=600, job_heartbeat_seconds=1)
    ctx = _context(settings)
    factory = ctx.session_factory
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with session_scope(factory) as session:  # as POST /recordings {"url": ...} leaves it
        recording = create_recording(session=session, source=url)
        recording.status = RecordingStatus.ingesting
        job = create_job(session=session, kind=JobKind.stream, recording_id=recording.id,
                         params={"url": settings.secret_box().encrypt(url), "source": url})
        recording_id, job_id = recording.id, job.id
    env = process_env(settings, WARDWATCH_STREAM_ALLOWED_NETWORKS="127.0.0.1/32",
                      WARDWATCH_STREAM_BACKOFF_INITIAL_SECONDS="0.5")
    log = tmp_path / "server.log"
    kept_before_kill: list[list] = []
    source = _serve_stream(ward_video.video, port)
    server = start_server(env, log)
    try:
        for _ in range(2):
            wanted = (len(kept_before_kill[-1]) if kept_before_kill else 0) + 4
            wait_for(lambda n=wanted: clip_count(factory, recording_id) >= n, timeout=120, process=server, log=log)
            kill(server)
            source.kill()
            source.wait()
            assert job_row(factory, job_id).status == "running"
            with session_scope(factory) as session:
                kept_before_kill.append(session.execute(
                    select(Clip.index, Clip.end).where(Clip.recording_id == recording_id).order_by(Clip.index)).all())
            source = _serve_stream(ward_video.video, port)  # the camera is still there
            server = start_server(env, log)  # the restart resumes the stream
        wait_for(lambda: clip_count(factory, recording_id) >= len(kept_before_kill[-1]) + 4, timeout=120,
                 process=server, log=log)
        with session_scope(factory) as session:
            stop_stream(session=session, recording_id=recording_id)  # as POST /recordings/{id}/stop
        wait_for(lambda: job_row(factory, job_id).status != "cancelled", timeout=60, process=server, log=log)
    finally:
        stop(server)
        source.kill()
        source.wait()
    done = job_row(factory, job_id)
    assert done.status == "succeeded" and done.attempts == 3 and done.result["stopped"] is True, done.error
    gaps = done.result["gaps"]  # each outage: from the end of the last clip kept to the first new frame
    assert [g[0] for g in gaps[:2]] == [pytest.approx(kept[-1].end) for kept in kept_before_kill]
    assert all(end > start for start, end in gaps)
    assert _jobs_of(factory, recording_id) == [("stream", "succeeded")]  # never re-scored as a file
    with session_scope(factory) as session:
        rows = session.execute(select(Clip.index, Clip.start, Clip.end).where(Clip.recording_id == recording_id)
                               .order_by(Clip.index)).all()
        recording = session.get(Recording, recording_id)
        assert recording.status == RecordingStatus.scored and recording.error is None
        assert sum(w.startswith("stream gap") for w in recording.warnings) >= 2
        events = session.execute(select(Event.label, Event.start).where(Event.recording_id == recording_id)).all()
    assert [r.index for r in rows] == list(range(len(rows)))  # indices continue after each restart
    for kept, (_, gap_end) in zip(kept_before_kill, gaps, strict=False):
        assert [(r.index, r.end) for r in rows[:len(kept)]] == [tuple(k) for k in kept]  # kept as they were
        assert rows[len(kept)].start >= gap_end - 1e-4  # no clip spans the outage (gaps are stored rounded to 1e-6 s)
    assert all(a.start < b.start for a, b in zip(rows, rows[1:], strict=False))
    assert len(events) == len(set(events))  # no event stored twice
