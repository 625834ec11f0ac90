"""The broker killed with SIGKILL and restarted under a running API (``wardwatch serve``) and Celery worker.

A private broker on a free port (the machine's are never restarted): Redis that keeps every write (appendfsync
always), Redis that keeps nothing (every message is lost), and a RabbitMQ node of the test's own. At the kill one
recording is being scored and one waits queued; a third is uploaded while the broker is down. The API answers
throughout (``/health`` 200, ``/ready`` 503 naming the broker, the upload 201); after the restart the worker
reconnects by itself and the API's job sweeper re-sends what the broker lost, and every recording ends scored,
started exactly once, with exactly the clips and events of a clean run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Job
from server.settings import Settings
from server.worker.scoring import process_recording
from tests.accounts import token_for
from tests.server.brokers import PrivateRabbit, PrivateRedis
from tests.server.faults_support import (
    job_row,
    process_env,
    register_copy,
    same_outcome,
    scoring_outcome,
    server_url,
    start_celery_worker,
    start_server,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.postgres]

RESTARTS = [
    pytest.param("redis", True, id="redis-kept", marks=pytest.mark.redis),
    pytest.param("redis", False, id="redis-lost", marks=pytest.mark.redis),
    pytest.param("rabbitmq", True, id="rabbitmq", marks=pytest.mark.rabbitmq),
]


class Liveness:
    """Polls ``/health`` from a thread for as long as the broker is away; every answer that is not 200 is kept."""

    def __init__(self, base: str) -> None:
        self.base, self.answers, self.failures = base, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Liveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                answer = httpx.get(f"{self.base}/api/v1/health", timeout=10)
                self.answers += 1
                if answer.status_code != 200:
                    self.failures.append(answer.status_code)
            except httpx.HTTPError as exc:
                self.failures.append(type(exc).__name__)


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateRedis | PrivateRabbit]:
    kind, persistent = request.param
    private = (PrivateRabbit(tmp_path / "rabbitmq") if kind == "rabbitmq"
               else PrivateRedis(tmp_path / "redis", persistent=persistent))
    try:
        yield private
    finally:
        private.stop()


def _upload(base: str, headers: dict[str, str], video: Path, name: str) -> int:
    with video.open("rb") as handle:
        answer = httpx.post(f"{base}/api/v1/recordings", files={"file": (name, handle, "video/mp4")},
                            data={"allow_duplicate": "true"}, headers=headers, timeout=60)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def _clean_run(data_dir: Path, video: Path) -> tuple[list, list]:
    """The clips and events of a clean run of ``video``, in this process on a SQLite database of its own (the
    API's sweeper never sees its job)."""
    ctx = make_worker_context(Settings(data_dir=data_dir, database_url=None, broker_url=None, device="cpu",
                                       commit_every=2, score_batch_size=1))
    recording_id, job_id = register_copy(ctx.settings, ctx.session_factory, video, "reference.mp4")
    process_recording(ctx, recording_id, job_id)
    assert job_row(ctx.session_factory, job_id).status == "succeeded"
    return scoring_outcome(ctx.session_factory, recording_id)


def _job(factory: sessionmaker[Session], recording_id: int) -> Job:
    with session_scope(factory) as session:
        job = session.scalars(select(Job).where(Job.recording_id == recording_id)).one()
        session.expunge(job)
        return job


@pytest.mark.parametrize("broker", [p.values for p in RESTARTS], ids=[p.id for p in RESTARTS], indirect=True)
def test_broker_killed_and_restarted_loses_no_job(broker: PrivateRedis | PrivateRabbit, pg_url: str, tmp_path: Path,
                                                 ward_video) -> None:  # type: ignore[no-untyped-def]
    broker.start(wait=False)  # it boots while the rest starts
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=broker.url, device="cpu",
                        commit_every=2, score_batch_size=1, job_lease_seconds=5, job_heartbeat_seconds=1,
                        job_sweep_seconds=1, job_redispatch_seconds=3)
    ctx = make_worker_context(settings)  # the model version is registered before the API starts
    factory = ctx.session_factory
    env = process_env(settings, WARDWATCH_BROKER_URL=broker.url, WARDWATCH_JOB_REDISPATCH_SECONDS="3")
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start_server(env, api_log)
    worker = start_celery_worker(env, worker_log, "restart")
    try:
        reference = _clean_run(tmp_path / "reference", ward_video.video)  # while they start
        broker.wait()
        base = server_url(api)
        wait_for(lambda: _ready(base) == 200, timeout=120, process=api, log=api_log, interval=0.25)
        wait_for(lambda: " ready." in worker_log.read_text(errors="replace"), timeout=120, process=worker,
                 log=worker_log)
        admin = token_for(SimpleNamespace(state=SimpleNamespace(session_factory=factory)), "admin")
        headers = {"Authorization": f"Bearer {admin}"}

        running = _upload(base, headers, ward_video.video, "running.mp4")
        running_job = _job(factory, running).id
        wait_for(lambda: job_row(factory, running_job).status == "running", timeout=120, process=worker,
                 log=worker_log, interval=0.05)
        waiting = _upload(base, headers, ward_video.video, "waiting.mp4")  # the solo worker is busy: it waits
        waiting_job = _job(factory, waiting).id
        broker.kill()
        assert job_row(factory, running_job).status == "running"  # killed mid-scoring ...
        assert job_row(factory, waiting_job).status == "queued"  # ... and with a message waiting in the broker

        with Liveness(base) as liveness:
            ready = httpx.get(f"{base}/api/v1/ready", timeout=30)
            assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("unavailable")
            assert httpx.get(f"{base}/api/v1/health", timeout=10).json()["mode"] == "broker"
            during = _upload(base, headers, ward_video.video, "during.mp4")  # accepted; its message not sent
            during_job = _job(factory, during).id
            assert job_row(factory, during_job).status == "queued" and _job(factory, during).dispatch_count == 0
            time.sleep(1)  # a few liveness probes while the broker is certainly down
            broker.start()  # the same port, with what it kept (or nothing)
            wait_for(lambda: _ready(base) == 200, timeout=60, process=api, log=api_log, interval=0.25)
            jobs = (running_job, waiting_job, during_job)
            wait_for(lambda: all(job_row(factory, job).status in ("succeeded", "failed") for job in jobs),
                     timeout=240, process=worker, log=worker_log, interval=0.25)
        assert liveness.answers > 0 and liveness.failures == []  # the API answered throughout
        assert worker.poll() is None  # the same worker reconnected by itself
    finally:
        stop(api)
        stop(worker)

    for job_id, recording_id in zip(jobs, (running, waiting, during), strict=True):
        done = job_row(factory, job_id)
        assert done.status == "succeeded" and done.attempts == 1, (recording_id, done)  # started exactly once
        same_outcome(scoring_outcome(factory, recording_id), reference)
    assert _job(factory, during).dispatch_count >= 1  # sent by the sweeper once the broker was back
    if isinstance(broker, PrivateRedis) and not broker.persistent:
        assert _job(factory, waiting).dispatch_count >= 2  # its message was lost with the broker's data: sent again


def _ready(base: str) -> int:
    try:
        return httpx.get(f"{base}/api/v1/ready", timeout=10).status_code
    except httpx.HTTPError:
        return 0
