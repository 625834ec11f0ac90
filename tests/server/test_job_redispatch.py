"""Queued jobs whose broker message may be lost (``job_recovery.lost_messages``, the sweeper's re-send pass): only
jobs waiting past ``job_redispatch_seconds`` since their last hand-over, only while their queue holds fewer
messages than such jobs, claimed so a second sweeper passes over them, and bounded by ``job_max_dispatches`` --
on SQLite and PostgreSQL, no broker processes (test_broker_restart.py runs them). And the broker settings:
Redis and RabbitMQ URLs, and what each transport is configured with."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.session import session_scope
from server.db.tables import Job, Recording, RecordingStatus
from server.job_sweeper import JobSweeper
from server.services import jobs
from server.services.job_recovery import NEVER_TAKEN, lost_messages
from server.services.recordings import create_recording
from server.settings import Settings
from server.worker.app import make_celery
from server.worker.dispatch import CeleryDispatcher
from tests.conftest import free_port

AMQP = "amqp://guest:s3cret@127.0.0.1:5672/wardwatch"


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", broker_url=None, job_redispatch_seconds=60, job_max_dispatches=3,
                    **extra)  # type: ignore[arg-type]


def _job(factory: sessionmaker[Session], kind: jobs.JobKind = jobs.JobKind.score, *, sent: int = 1,
         age: float = 0.0) -> int:
    """A queued job (with a recording, for scoring) handed over ``sent`` times, the last ``age`` seconds ago."""
    with session_scope(factory) as session:
        recording = create_recording(session=session, source="r.mp4") if kind != jobs.JobKind.finetune else None
        if recording is not None:
            recording.status = RecordingStatus.queued
        job = jobs.create_job(session=session, kind=kind, recording_id=recording.id if recording else None)
        job_id = job.id
    for n in range(sent):
        with session_scope(factory) as session:
            jobs.note_task_id(session=session, job_id=job_id, task_id=f"task-{n}")
    then = utcnow() - timedelta(seconds=age)
    with session_scope(factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            created_at=then, dispatched_at=then if sent else None))
    return job_id


def _lost(factory: sessionmaker[Session], settings: Settings, short_before: frozenset[str] = frozenset(),
          **depths: int) -> tuple[list[int], list[int], frozenset[str]]:
    with session_scope(factory) as session:
        decided = lost_messages(session=session, settings=settings, depths=depths, short_before=short_before)
    return [row[0] for row in decided.resend], [row[0] for row in decided.failed], decided.short


def test_note_task_id_counts_hand_overs(factory: sessionmaker[Session]) -> None:
    job_id = _job(factory, sent=0)
    with session_scope(factory) as session:
        jobs.note_task_id(session=session, job_id=job_id, task_id=None)  # nothing was sent
        job = jobs.get_job(session=session, job_id=job_id)
        assert (job.dispatch_count, job.dispatched_at, job.celery_id) == (0, None, None)
        jobs.note_task_id(session=session, job_id=job_id, task_id="a")
        jobs.note_task_id(session=session, job_id=job_id, task_id="b")
        job = jobs.get_job(session=session, job_id=job_id)  # the loaded row sees the new values
        assert job.dispatch_count == 2 and job.celery_id == "b" and job.dispatched_at is not None


def test_only_long_waiting_jobs_in_a_short_queue_are_sent_again(factory: sessionmaker[Session],
                                                                  tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    waiting = _job(factory, age=120)
    _job(factory, age=5)  # handed over a moment ago: its message is surely on its way
    never_sent = _job(factory, jobs.JobKind.finetune, sent=0, age=120)  # the broker was down when it was made
    started = _job(factory, age=120)
    with session_scope(factory) as session:
        jobs.start_job(session=session, job_id=started, owner=jobs.new_owner(), lease_seconds=30)

    # the inference queue still holds a message for each long-waiting job: a backlog, not a loss; the training
    # queue is short, but only once so far (a worker may just have taken the message)
    assert _lost(factory, settings, inference=1, training=0) == ([], [], {"training"})
    assert _lost(factory, settings, {"training"}, inference=1, training=0) == ([never_sent], [], {"training"})
    assert _lost(factory, settings, {"training"}, inference=0) == ([], [], {"inference"})  # training: just claimed
    assert _lost(factory, settings, {"inference"}, inference=0) == ([waiting], [], {"inference"})
    assert _lost(factory, settings, {"inference", "training"}, inference=0, training=0) == ([], [], set())
    with session_scope(factory) as session:
        assert jobs.get_job(session=session, job_id=waiting).status == jobs.JobStatus.queued  # still the DB's job


def test_a_job_no_worker_takes_fails_after_the_bounded_hand_overs(factory: sessionmaker[Session],
                                                                    tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spent = _job(factory, sent=3, age=120)
    stream = _job(factory, jobs.JobKind.stream, sent=2, age=120)
    short = frozenset({"inference", "streams"})
    assert _lost(factory, settings, short, inference=0, streams=0) == ([stream], [spent], short)
    with session_scope(factory) as session:
        job = jobs.get_job(session=session, job_id=spent)
        assert job.status == jobs.JobStatus.failed and job.error.startswith(NEVER_TAKEN)
        assert "inference queue" in job.error
        recording = session.get(Recording, job.recording_id)
        assert recording.status == RecordingStatus.failed and recording.error.startswith(NEVER_TAKEN)


def test_the_sweeper_leaves_waiting_jobs_alone_while_the_broker_is_down(factory: sessionmaker[Session],
                                                                          db_url: str, tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=down, job_redispatch_seconds=60,
                        broker_connect_timeout_seconds=1)
    waiting = _job(factory, age=120)
    dispatcher = CeleryDispatcher(settings)
    try:
        assert dispatcher.process_recording(1, waiting) is None  # a failed send is no error for the caller
        sweeper = JobSweeper(settings, factory, dispatcher)
        assert sweeper.resend_lost() == 0  # depths unknown: nothing decided
        segment = _job(factory, jobs.JobKind.segment, sent=0, age=120)
        # a segment's send raises (its recording's task retries on it); the sweeper goes on to the next job
        sweeper.dispatch([(segment, jobs.JobKind.segment, None), (waiting, jobs.JobKind.score, 1)])
    finally:
        dispatcher.shutdown()
    with session_scope(factory) as session:
        job = jobs.get_job(session=session, job_id=waiting)
        assert job.status == jobs.JobStatus.queued and job.dispatch_count == 1  # untouched, sent next time
    rabbit_down = CeleryDispatcher(Settings(data_dir=tmp_path / "data", broker_url=f"amqp://guest:guest@127.0.0.1:"
                                            f"{free_port()}//", broker_connect_timeout_seconds=1))
    try:
        assert rabbit_down.finetune(waiting) is None and rabbit_down.stream(1, waiting) is None
    finally:
        rabbit_down.shutdown()


def test_broker_urls(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=AMQP)
    assert not settings.embedded and "s3cret" not in repr(settings)
    assert Settings(data_dir=tmp_path, broker_url="rediss://:pw@cache:6380/0").broker_url is not None
    assert Settings(data_dir=tmp_path, broker_url="").embedded
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path, broker_url="reddis://:s3cret@127.0.0.1:6379/0")
    assert "must start with one of" in str(refused.value) and "s3cret" not in str(refused.value)
    with pytest.raises(ValidationError, match="webhook_backoff_max_seconds"):
        Settings(data_dir=tmp_path, broker_visibility_timeout_seconds=600, webhook_backoff_max_seconds=3600)


def test_transport_settings(tmp_path: Path) -> None:
    redis_conf = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0",
                                      broker_visibility_timeout_seconds=7200)).conf
    amqp_conf = make_celery(Settings(data_dir=tmp_path, broker_url=AMQP)).conf
    for conf in (redis_conf, amqp_conf):  # one message per worker, acknowledged when its task ends
        assert conf.task_acks_late and conf.task_reject_on_worker_lost
        assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
        assert conf.broker_connection_max_retries is None and conf.broker_heartbeat == 0
        assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert redis_conf.broker_transport_options["visibility_timeout"] == 7200
    assert amqp_conf.broker_transport_options == {"confirm_publish": True}


def test_a_lost_segment_message_is_sent_again(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A recording's segment waits on the inference queue like its scoring job; its message may be lost too."""
    settings = _settings(tmp_path)
    segment = _job(factory, jobs.JobKind.segment, age=120)
    short = frozenset({"inference"})
    with session_scope(factory) as session:
        decided = lost_messages(session=session, settings=settings, depths={"inference": 0}, short_before=short)
    assert [(job_id, kind) for job_id, kind, _ in decided.resend] == [(segment, jobs.JobKind.segment)]


def test_a_short_queue_gets_back_only_what_it_is_short_of(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Three jobs wait, the broker holds two messages (a worker is still starting with the third): one goes again,
    the one waiting longest; the others' hand-over counts stay as they were."""
    settings = _settings(tmp_path)
    oldest = _job(factory, age=300)
    middle = _job(factory, age=200)
    newest = _job(factory, age=120)
    short = frozenset({"inference"})
    assert _lost(factory, settings, short, inference=2) == ([oldest], [], short)
    with session_scope(factory) as session:
        counts = {j: jobs.get_job(session=session, job_id=j).dispatch_count for j in (oldest, middle, newest)}
    assert counts == {oldest: 1, middle: 1, newest: 1}  # note_task_id counts the re-send when it is made
