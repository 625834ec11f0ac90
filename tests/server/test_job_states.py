"""The job state machine of ``server.services.jobs``: allowed and refused transitions, leases held and lost,
expiry found by the sweep, bounded attempts -- on SQLite and PostgreSQL, no processes (see test_faults.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.session import session_scope
from server.db.tables import Clip, JobStatus
from server.job_lease import JobLease
from server.main import create_app
from server.pipeline import WorkerContext, flush_clips
from server.services import jobs
from server.services.errors import ConflictError
from server.services.job_recovery import recover_lost_jobs
from server.settings import Settings
from tests.accounts import bearer


def _new(factory: sessionmaker[Session], kind: jobs.JobKind = jobs.JobKind.score) -> int:
    with session_scope(factory) as session:
        return jobs.create_job(session=session, kind=kind, params={"x": 1}).id


def _start(factory: sessionmaker[Session], job_id: int, lease: float = 30) -> str:
    owner = jobs.new_owner()
    with session_scope(factory) as session:
        jobs.start_job(session=session, job_id=job_id, owner=owner, lease_seconds=lease)
    return owner


def _status(factory: sessionmaker[Session], job_id: int) -> tuple[JobStatus, int, str | None]:
    with session_scope(factory) as session:
        job = jobs.get_job(session=session, job_id=job_id)
        return job.status, job.attempts, job.lease_owner


def test_a_job_runs_once_and_its_end_is_final(factory: sessionmaker[Session]) -> None:
    job_id = _new(factory)
    owner = _start(factory, job_id)
    assert _status(factory, job_id) == (JobStatus.running, 1, owner)
    with pytest.raises(jobs.IllegalTransition), session_scope(factory) as session:  # a duplicate message
        jobs.start_job(session=session, job_id=job_id, owner=jobs.new_owner(), lease_seconds=30)
    with pytest.raises(jobs.LeaseLost), session_scope(factory) as session:  # not the owner
        jobs.heartbeat(session=session, job_id=job_id, owner=jobs.new_owner(), lease_seconds=30)
    with pytest.raises(jobs.LeaseLost), session_scope(factory) as session:
        jobs.succeed_job(session=session, job_id=job_id, owner=jobs.new_owner(), result={})
    with session_scope(factory) as session:
        jobs.heartbeat(session=session, job_id=job_id, owner=owner, lease_seconds=30, progress=0.5,
                       result={"step": 1})
        jobs.succeed_job(session=session, job_id=job_id, owner=owner, result={"clips": 3})
    with session_scope(factory) as session:
        job = jobs.get_job(session=session, job_id=job_id)
        assert (job.status, job.progress, job.result) == (JobStatus.succeeded, 1.0, {"step": 1, "clips": 3})
        assert job.lease_owner is None and job.lease_expires_at is None and job.finished_at is not None
    for change in (lambda s: jobs.fail_job(session=s, job_id=job_id, reason="late"),
                   lambda s: jobs.requeue_job(session=s, job=jobs.get_job(session=s, job_id=job_id), reason="x"),
                   lambda s: jobs.start_job(session=s, job_id=job_id, owner="o", lease_seconds=1)):
        with pytest.raises(jobs.IllegalTransition) as refused, session_scope(factory) as session:
            change(session)
        assert refused.value.status == JobStatus.succeeded and "is succeeded" in str(refused.value)
    with pytest.raises(ConflictError, match="already succeeded"), session_scope(factory) as session:
        jobs.cancel_job(session=session, job_id=job_id)


def test_cancel_and_stop(factory: sessionmaker[Session]) -> None:
    queued = _new(factory, jobs.JobKind.finetune)
    with session_scope(factory) as session:
        assert jobs.cancel_job(session=session, job_id=queued).finished_at is not None  # nobody runs it
    with pytest.raises(jobs.IllegalTransition), session_scope(factory) as session:
        jobs.start_job(session=session, job_id=queued, owner="o", lease_seconds=1)
    training, stream = _new(factory, jobs.JobKind.finetune), _new(factory, jobs.JobKind.stream)
    owners = {job_id: _start(factory, job_id) for job_id in (training, stream)}
    scoring = _new(factory)
    with session_scope(factory) as session:
        for job_id in (training, stream):
            assert jobs.cancel_job(session=session, job_id=job_id).finished_at is None  # its owner stops, then
        with pytest.raises(ConflictError, match="only finetune jobs"):
            jobs.cancel_job(session=session, job_id=scoring, kinds=(jobs.JobKind.finetune,))
    with session_scope(factory) as session:
        assert jobs.is_cancelled(session=session, job_id=training)
        jobs.heartbeat(session=session, job_id=stream, owner=owners[stream], lease_seconds=30)  # still its lease
        jobs.succeed_job(session=session, job_id=training, owner=owners[training], result={"model": 1})
        jobs.succeed_job(session=session, job_id=stream, owner=owners[stream], result={"stopped": True})
    assert _status(factory, training)[0] == JobStatus.cancelled  # the administrator's word stands
    assert _status(factory, stream)[0] == JobStatus.succeeded  # a stopped stream ended as asked


def test_an_expired_lease_is_requeued_then_failed_after_the_bounded_attempts(factory: sessionmaker[Session],
                                                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", job_max_attempts=2, job_lease_seconds=5, job_heartbeat_seconds=1)
    job_id = _new(factory)
    for attempt in (1, 2):
        _start(factory, job_id, lease=5)
        with session_scope(factory) as session:
            assert jobs.expired_jobs(session=session, now=utcnow()) == []  # the lease still runs
            lost = jobs.expired_jobs(session=session, now=utcnow() + timedelta(seconds=6))
            done = jobs.reclaim(session=session, jobs=lost, max_attempts=settings.job_max_attempts)
        if attempt == 1:
            assert done.requeued == [(job_id, "score", None)] and done.failed == []
            status, attempts, owner = _status(factory, job_id)
            assert (status, attempts, owner) == (JobStatus.queued, 1, None)
    assert done.failed == [(job_id, "score", None)]
    with session_scope(factory) as session:
        job = jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.failed and job.attempts == 2
        assert job.error is not None and job.error.startswith("worker lost") and "2 attempts" in job.error
        assert recover_lost_jobs(session=session, settings=settings).requeued == []  # nothing loops


def test_a_worker_that_lost_its_lease_writes_nothing(factory: sessionmaker[Session], tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", job_lease_seconds=2, job_heartbeat_seconds=1)
    job_id = _new(factory)
    owner = _start(factory, job_id)
    with session_scope(factory) as session:  # the sweeper decided the owner was dead
        jobs.requeue_job(session=session, job=jobs.get_job(session=session, job_id=job_id), reason="worker lost")
    lease = JobLease(factory, settings, job_id, owner)
    ctx = WorkerContext(settings=settings, session_factory=factory, models=None)  # type: ignore[arg-type]
    clip = Clip(recording_id=None, index=0, start=0.0, end=1.0, frame_indices=[], timestamps=[], scores={},
                model_version_id=None)
    with pytest.raises(jobs.LeaseLost):
        flush_clips(ctx, [clip], lease, 0.5)
    assert lease.lost.is_set()
    with session_scope(factory) as session:
        assert session.query(Clip).count() == 0


def test_dead_owners_on_this_host() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    host = jobs.new_owner().split(":")[0]
    assert jobs.owner_is_dead_here(f"{host}:{dead_pid}:abc")
    assert not jobs.owner_is_dead_here(jobs.new_owner())  # this process, this run
    assert jobs.owner_is_dead_here(f"{host}:{os.getpid()}:0123456789abcdef")  # this pid, an earlier process
    assert not jobs.owner_is_dead_here(f"{host}:{os.getppid()}:abc")  # alive
    assert not jobs.owner_is_dead_here(f"elsewhere:{dead_pid}:abc")  # another host: only its lease tells
    assert not jobs.owner_is_dead_here(None)


def test_cancelling_a_scoring_job_is_a_409(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with TestClient(app) as client:
        job_id = _new(app.state.session_factory)
        answer = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(app, "admin"))
        assert answer.status_code == 409
        assert answer.json()["detail"] == f"only finetune jobs can be cancelled; job {job_id} is a score job"
