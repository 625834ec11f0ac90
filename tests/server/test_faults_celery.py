"""Two Celery workers on PostgreSQL and Redis or RabbitMQ; the one scoring a recording is killed with SIGKILL. On
Redis its unacknowledged message would come back only after the visibility timeout (hours); on RabbitMQ it comes
back at once, to find its job still leased to the dead worker (a no-op). Either way the job's lease expires within
seconds, the job sweeper (the API's, run here) re-queues the job and sends it again, and the other worker finishes
it with exactly the clips and events of a clean run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.bootstrap import make_worker_context
from server.job_sweeper import JobSweeper
from server.settings import Settings
from server.worker.dispatch import CeleryDispatcher
from server.worker.scoring import process_recording
from tests.server.brokers import BROKERS, shared_broker
from tests.server.faults_support import (
    clip_count,
    job_row,
    kill,
    process_env,
    register_copy,
    same_outcome,
    scoring_outcome,
    start_celery_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.postgres]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    with shared_broker(request.param, redis_db=14) as url:  # a Redis database of its own (see tests/conftest.py)
        yield url


def test_a_killed_celery_workers_job_goes_to_the_other_worker(pg_url: str, tmp_path: Path, broker: str,
                                                             ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=broker, device="cpu",
                        commit_every=2, score_batch_size=1, job_lease_seconds=3, job_heartbeat_seconds=1)
    ctx = make_worker_context(settings)
    factory = ctx.session_factory
    reference_id, reference_job = register_copy(settings, factory, ward_video.video, "reference.mp4")
    process_recording(ctx, reference_id, reference_job)
    reference = scoring_outcome(factory, reference_id)
    env = process_env(settings, WARDWATCH_BROKER_URL=broker)
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    workers = [start_celery_worker(env, log, f"w{n}") for n, log in enumerate(logs, 1)]
    dispatcher = CeleryDispatcher(settings)
    try:
        for log in logs:  # both consume before the task is sent
            wait_for(lambda log=log: "ready" in log.read_text(errors="replace"), timeout=120, log=log)
        victim, job_id = register_copy(settings, factory, ward_video.video, "victim.mp4")
        dispatcher.process_recording(victim, job_id)
        wait_for(lambda: clip_count(factory, victim) >= 4, timeout=180)
        owner_pid = int(job_row(factory, job_id).lease_owner.split(":")[1])
        busy = next(w for w in workers if w.pid == owner_pid)
        kill(busy)  # mid-recording
        assert job_row(factory, job_id).status == "running"
        sweeper = JobSweeper(settings, factory, dispatcher)
        wait_for(sweeper.sweep_once, timeout=60, interval=0.5)  # noticed by the lease, sent again
        other = next(w for w in workers if w is not busy)
        wait_for(lambda: job_row(factory, job_id).status in ("succeeded", "failed"), timeout=240, process=other,
                 log=logs[workers.index(other)])
    finally:
        for worker in workers:
            if worker.poll() is None:
                stop(worker)
        dispatcher.shutdown()
    done = job_row(factory, job_id)
    assert done.status == "succeeded" and done.attempts == 2, done.error
    same_outcome(scoring_outcome(factory, victim), reference)
