"""Segments across real ``wardwatch worker`` processes on PostgreSQL and a private Redis (its own redis-server on a
free port, so no other test's messages mix in):

* two workers on one host register under their own node names, take a recording's segments from the inference
  queue and end with exactly the clips and events of a single pass;
* a worker's database connection is terminated (``pg_terminate_backend``) in the middle of a clip commit: the
  batch is rolled back whole, the task hands its segment back and is retried, and the recording ends as a clean
  run does;
* the broker is down when a recording's segments are handed out: the hand-out is retried with a backoff until
  the broker is back, and then every segment's message is on the queue.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from server.bootstrap import make_worker_context
from server.job_sweeper import JobSweeper
from server.settings import Settings
from server.worker.app import make_celery
from server.worker.dispatch import CeleryDispatcher, EmbeddedDispatcher
from server.worker.scoring import process_recording
from tests.conftest import free_port
from tests.server.faults_support import clip_count, process_env, register_copy, stop, wait_for
from tests.server.segments_support import assert_same_outcome, jobs_of, outcome

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
VICTIM = "wardwatch-victim"  # application_name of the worker whose connections are terminated


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), timeout=20, process=process)
    return process


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def broker() -> Iterator[str]:
    """A private Redis for this test only."""
    port = free_port()
    process = _redis_server(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


def _settings(pg_url: str, tmp_path: Path, broker: str, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=broker, device="cpu", commit_every=1,
                    score_batch_size=2, segment_seconds=12.0, job_lease_seconds=10, job_heartbeat_seconds=2,
                    job_sweep_seconds=1, task_retry_backoff_seconds=0.5, **extra)  # type: ignore[arg-type]


def _workers(settings: Settings, tmp_path: Path, count: int, **env: str) -> tuple[list[subprocess.Popen[bytes]],
                                                                                   list[Path]]:
    environment = process_env(settings, WARDWATCH_BROKER_URL=str(settings.broker_url),
                              WARDWATCH_COMMIT_EVERY=str(settings.commit_every),
                              WARDWATCH_SCORE_BATCH_SIZE=str(settings.score_batch_size),
                              WARDWATCH_SEGMENT_SECONDS=str(settings.segment_seconds),
                              WARDWATCH_TASK_RETRY_BACKOFF_SECONDS=str(settings.task_retry_backoff_seconds), **env)
    logs = [tmp_path / f"worker-{n}.log" for n in range(count)]
    workers = [subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--queues", "inference",
                                 "--concurrency", "2"], env=environment, stdout=log.open("wb"),
                                stderr=subprocess.STDOUT) for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        wait_for(lambda log=log: " ready." in log.read_text(errors="replace"), timeout=180, process=worker, log=log)
    return workers, logs


def _reference(settings: Settings, video: Path):  # type: ignore[no-untyped-def]
    ctx = make_worker_context(settings.model_copy(update={"broker_url": None}))
    recording_id, job_id = register_copy(ctx.settings, ctx.session_factory, video, "reference.mp4")
    process_recording(ctx, recording_id, job_id)  # one piece, in this process
    return outcome(ctx.session_factory, recording_id)


def _wait_done(factory, recording_id: int, workers, logs) -> None:  # type: ignore[no-untyped-def]
    def finished() -> bool:
        return jobs_of(factory, recording_id)[0].status.value in ("succeeded", "failed")

    deadline = time.monotonic() + 300
    while not finished():
        assert time.monotonic() < deadline, "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
        assert all(w.poll() is None for w in workers), "a worker died"
        time.sleep(0.2)


def test_two_workers_have_their_own_names_and_score_the_segments_of_one_recording(
        pg_url: str, tmp_path: Path, broker: str, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(pg_url, tmp_path, broker)
    reference = _reference(settings, ward_video.video)
    workers, logs = _workers(settings, tmp_path, 2)
    dispatcher = CeleryDispatcher(settings)
    try:
        replies = make_celery(settings).control.ping(timeout=5)
        names = {name for reply in replies for name in reply}
        assert len(names) == 2 and all(name.startswith("wardwatch-") for name in names), replies
        assert {int(name.split("-", 1)[1].split("@")[0]) for name in names} == {w.pid for w in workers}
        ctx = make_worker_context(settings)
        recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "segmented.mp4")
        dispatcher.process_recording(recording_id, job_id)
        _wait_done(ctx.session_factory, recording_id, workers, logs)
    finally:
        for worker in workers:
            stop(worker)
        dispatcher.shutdown()
    parent, *segments = jobs_of(ctx.session_factory, recording_id)
    assert parent.status.value == "succeeded", parent.error
    assert len(segments) == 3 and all(s.status.value == "succeeded" for s in segments)
    ran_by = {int(s.result["worker"].rsplit(":", 1)[1]) for s in segments}
    assert ran_by <= {w.pid for w in workers}
    assert sum("wardwatch.score_segment" in log.read_text(errors="replace") for log in logs) >= 1
    assert_same_outcome(outcome(ctx.session_factory, recording_id), reference)


def test_a_connection_terminated_mid_commit_is_retried_and_writes_nothing_twice(
        pg_url: str, tmp_path: Path, broker: str, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(pg_url, tmp_path, broker)
    reference = _reference(settings, ward_video.video)
    victim_url = make_url(pg_url).update_query_dict({"application_name": VICTIM}).render_as_string(
        hide_password=False)
    workers, logs = _workers(settings, tmp_path, 1, WARDWATCH_DATABASE_URL=victim_url)
    ctx = make_worker_context(settings)
    dispatcher = CeleryDispatcher(settings)
    sweeper = JobSweeper(settings, ctx.session_factory, dispatcher)  # the API's: covers a hand-back that failed too
    sweeper.start()
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "victim.mp4")
        dispatcher.process_recording(recording_id, job_id)
        wait_for(lambda: clip_count(ctx.session_factory, recording_id) >= 2, timeout=180, process=workers[0],
                 log=logs[0])
        # Hold the scoring job's row: the worker's next commit inserts its clips, then waits on the row to note
        # the progress -- in the middle of its transaction. Terminate that backend there.
        with psycopg.connect(admin) as holder:
            holder.execute("SELECT id FROM job WHERE id = %s FOR UPDATE", (job_id,))
            blocked = wait_for(lambda: _waiting_on_a_lock(admin), timeout=120, process=workers[0], log=logs[0])
            committed = clip_count(ctx.session_factory, recording_id)
            with psycopg.connect(admin, autocommit=True) as killer:
                killed = [killer.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] for pid in blocked]
            assert all(killed)
            assert clip_count(ctx.session_factory, recording_id) == committed  # the aborted batch left nothing
            holder.rollback()
        _wait_done(ctx.session_factory, recording_id, workers, logs)
    finally:
        sweeper.stop()
        for worker in workers:
            stop(worker)
        dispatcher.shutdown()
    parent, *segments = jobs_of(ctx.session_factory, recording_id)
    assert parent.status.value == "succeeded", parent.error
    assert all(s.status.value == "succeeded" for s in segments)
    retried = [s for s in segments if (s.result or {}).get("retries", 0) >= 1]
    assert len(retried) >= len(blocked) >= 1, [s.result for s in segments]
    assert all(s.attempts == 1 for s in retried)  # a retry is not a lost worker's attempt
    log = logs[0].read_text(errors="replace")
    assert "terminating connection due to administrator command" in log and "Retry in" in log
    assert_same_outcome(outcome(ctx.session_factory, recording_id), reference)


def _waiting_on_a_lock(admin: str) -> list[int]:
    with psycopg.connect(admin) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND "
                            "wait_event_type = 'Lock'", (VICTIM,)).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_segments_handed_out_while_the_broker_is_down_are_sent_once_it_is_back(
        db_url: str, tmp_path: Path, ward_video, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"  # nothing listens yet
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                        segment_seconds=12.0, task_retry_backoff_seconds=0.5, task_retry_backoff_max_seconds=2,
                        task_max_retries=30)
    ctx = make_worker_context(settings)
    celery = CeleryDispatcher(settings.model_copy(update={"broker_url": broker}))
    embedded = EmbeddedDispatcher(ctx)  # runs the recording's task here; its segments go to the (real) broker
    ctx.dispatch_segment = celery.score_segment
    server: subprocess.Popen[bytes] | None = None
    try:
        recording_id, job_id = register_copy(settings, ctx.session_factory, ward_video.video, "outage.mp4")
        embedded.process_recording(recording_id, job_id)
        wait_for(lambda: len(_retries_logged(caplog)) >= 2, timeout=120)  # the closed port, twice
        assert len(jobs_of(ctx.session_factory, recording_id)) == 4  # handed out in the database meanwhile
        server = _redis_server(port)
        embedded.wait(timeout=120)
        queued = redis.Redis(port=port).llen("inference")
    finally:
        embedded.shutdown()
        celery.shutdown()
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
    parent, *segments = jobs_of(ctx.session_factory, recording_id)
    assert parent.status.value == "running" and parent.lease_owner is None  # waiting on its segments
    assert queued >= len(segments) == 3 and all(s.status.value == "queued" for s in segments)
    assert all("OperationalError" in message for message in _retries_logged(caplog))


def _retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "server.worker.dispatch" and "; retry " in record.getMessage()]

