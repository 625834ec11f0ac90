"""docker-compose's layout run natively: migrate, API and a Celery worker as separate processes on the real
PostgreSQL and Redis or RabbitMQ of this machine, sharing only the database, the broker and the data volume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.server.brokers import BROKERS, shared_broker

pytestmark = [pytest.mark.postgres]

ADMIN: dict[str, str] = {}  # tokens made with the CLI against the stack's database (fixture)
CLINICIAN: dict[str, str] = {}
TINY_FINETUNE = {"epochs": 1, "batch_size": 4, "unlabelled_batch_size": 4, "alpha": 2, "lr": 1e-4,
                 "eval_batch_size": 8}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def _cli_token(env: dict[str, str], role: str, scopes: list[str]) -> str:
    """Bootstrap as an operator would: ``wardwatch users create`` and ``tokens create`` (last line: the token)."""
    name = f"ops-{role}"
    for args in (["users", "create", "--username", name, "--password", "distributed s3cret pw", "--role", role],
                 ["tokens", "create", "--user", name, "--scopes", *scopes]):
        done = subprocess.run([sys.executable, "-m", "server.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    with shared_broker(request.param, redis_db=9) as url:
        yield url


@pytest.fixture
def stack(tmp_path: Path, pg_url: str, broker: str) -> Iterator[tuple[str, Path]]:
    env = {
        **os.environ,
        "WARDWATCH_DATA_DIR": str(tmp_path / "data"),
        "WARDWATCH_DATABASE_URL": pg_url,
        "WARDWATCH_BROKER_URL": broker,
        "WARDWATCH_AUTO_MIGRATE": "false",
        "WARDWATCH_DEVICE": "cpu",
    }
    migrate = subprocess.run([sys.executable, "-m", "server.cli", "db", "upgrade"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    for role, scopes, headers in (("admin", ["read:events", "write:recordings", "admin"], ADMIN),
                                  ("clinician", ["read:events", "review"], CLINICIAN)):
        headers.clear()
        headers["Authorization"] = f"Bearer {_cli_token(env, role, scopes)}"
    port = free_port()
    api = _start(["server.cli", "serve", "--port", str(port)], env, tmp_path / "api.log")
    worker = _start(["server.cli", "worker"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.5)
        yield base, tmp_path
    finally:
        _stop(api)
        _stop(worker)


def test_recording_through_api_and_celery_worker(stack, ward_video) -> None:  # type: ignore[no-untyped-def]
    base, logs = stack
    health = httpx.get(f"{base}/api/v1/health").json()
    assert health["mode"] == "broker"
    with ward_video.video.open("rb") as handle:
        answer = httpx.post(f"{base}/api/v1/recordings", files={"file": ("ward.mp4", handle, "video/mp4")},
                            timeout=60, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    recording_id = answer.json()["id"]
    deadline = time.monotonic() + 240
    while True:
        recording = httpx.get(f"{base}/api/v1/recordings/{recording_id}", headers=ADMIN).json()
        if recording["status"] in ("scored", "failed"):
            break
        assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
        time.sleep(1)
    assert recording["status"] == "scored", recording["error"]
    worker_log = (logs / "worker.log").read_text()
    assert "wardwatch.process_recording" in worker_log  # the worker process, not the API, did the work
    events = httpx.get(f"{base}/api/v1/events", params={"recording": recording_id}, headers=ADMIN).json()
    assert events["count"] >= 1
    explanations = httpx.get(f"{base}/api/v1/events/{events['data'][0]['id']}/explanations",
                             headers=ADMIN).json()["data"]
    assert len(explanations) == 3
    overlay = httpx.get(base + explanations[0]["overlay_url"], headers=ADMIN)
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
    job = httpx.get(f"{base}/api/v1/jobs/1", headers=ADMIN).json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0

    _finetune_through_the_training_queue(base, logs, recording_id, events["data"])


def _wait_job(base: str, job_id: int, logs: Path, done: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=ADMIN).json()
        if job["status"] in done:
            return job
        assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
        time.sleep(0.5)


def _finetune_through_the_training_queue(base: str, logs: Path, recording_id: int, events: list[dict]) -> None:
    """An admin's fine-tune job runs in the worker process (Celery `training` queue), gives a candidate
    model, and a second job cancelled while it runs there stops without leaving a model behind."""
    assert len(events) >= 2
    for event, decision in zip(events[:2], ("confirmed", "rejected"), strict=True):
        reviewed = httpx.post(f"{base}/api/v1/events/{event['id']}/review", json={"decision": decision},
                              headers=CLINICIAN)
        assert reviewed.status_code == 200, reviewed.text
    refused = httpx.post(f"{base}/api/v1/finetune-jobs", json={"hyperparameters": TINY_FINETUNE})
    assert refused.status_code == 401
    answer = httpx.post(f"{base}/api/v1/finetune-jobs", json={"hyperparameters": TINY_FINETUNE}, headers=ADMIN)
    assert answer.status_code == 202, answer.text
    job = _wait_job(base, answer.json()["id"], logs, ("succeeded", "failed"))
    assert job["status"] == "succeeded", job["error"]
    assert "wardwatch.finetune" in (logs / "worker.log").read_text()  # run by the worker, not the API
    models = {m["id"]: m for m in httpx.get(f"{base}/api/v1/models", headers=ADMIN).json()}
    candidate = models[job["result"]["model_version_id"]]
    assert candidate["state"] == "candidate" and "comparison" in candidate["metrics"]

    slow = httpx.post(f"{base}/api/v1/finetune-jobs", json={"hyperparameters": TINY_FINETUNE | {"epochs": 500}},
                      headers=ADMIN).json()
    _wait_job(base, slow["id"], logs, ("running",), timeout=120)
    assert httpx.post(f"{base}/api/v1/jobs/{slow['id']}/cancel", headers=ADMIN).status_code == 200
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/api/v1/jobs/{slow['id']}", headers=ADMIN).json()["error"] is None:  # set once stopped
        assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
        time.sleep(0.5)
    stopped = httpx.get(f"{base}/api/v1/jobs/{slow['id']}", headers=ADMIN).json()
    assert stopped["status"] == "cancelled" and stopped["error"] == "cancelled by an administrator"
    assert len(httpx.get(f"{base}/api/v1/models", headers=ADMIN).json()) == len(models)
    assert not list((logs / "data" / "models").glob(f"finetune-{slow['id']}*"))
