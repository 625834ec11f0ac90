"""/api/v1/ready names the part that is missing (database, broker, active model), and the request ID reaches the
logs: JSON lines from a route, and from a Celery task the API queued (real Redis, a real worker thread)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from server.db.session import session_scope
from server.db.tables import ModelState, ModelVersion
from server.main import create_app
from server.observability.logs import REQUEST_ID, ContextFilter, JsonFormatter
from server.settings import Settings
from server.worker.app import make_celery
from server.worker.request_ids import task_headers
from tests.conftest import REDIS_URL, _admin_exec

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
BROKER = f"{REDIS_URL}/12"  # a Redis database of its own (tests/conftest.py)


def _settings(pg_url: str, tmp_path: Path, broker: str | None = BROKER) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=broker, device="cpu")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes, as the JSON handler ``configure_logging`` installs would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_ready_with_database_broker_and_model(pg_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(_settings(pg_url, tmp_path))) as client:
        answer = client.get("/api/v1/ready")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready" and body["database"] == "ok" and body["broker"] == "ok"
    assert isinstance(body["model"], dict) and body["model"]["id"]


def test_broker_down_is_503_naming_the_broker_and_logged_with_the_request_id(
        pg_url: str, tmp_path: Path, json_lines: io.StringIO) -> None:
    with TestClient(create_app(_settings(pg_url, tmp_path, broker="redis://127.0.0.1:1/0"))) as client:
        answer = client.get("/api/v1/ready")
    assert answer.status_code == 503
    body = answer.json()
    assert body["detail"] == "not ready: broker" and body["checks"]["broker"].startswith("unavailable")
    assert body["checks"]["database"] == "ok"
    logged = [line for line in _lines(json_lines) if "broker unavailable" in str(line["message"])]
    assert logged and logged[0]["request_id"] == answer.headers["X-Request-ID"]
    assert logged[0]["level"] == "WARNING" and logged[0]["logger"] == "server.api.routes.health"


def test_no_active_model_is_503_naming_the_model(pg_url: str, tmp_path: Path) -> None:
    app = create_app(_settings(pg_url, tmp_path, broker=None))
    with session_scope(app.state.session_factory) as session:
        session.execute(update(ModelVersion).values(state=ModelState.retired))
    with TestClient(app) as client:
        answer = client.get("/api/v1/ready")
    assert answer.status_code == 503
    assert answer.json()["detail"] == "not ready: model"
    assert answer.json()["checks"]["model"] == "no active model version"


def test_database_gone_is_503_naming_the_database(pg_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(_settings(pg_url, tmp_path, broker=None))) as client:
        assert client.get("/api/v1/ready").status_code == 200
        _admin_exec(f'DROP DATABASE "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)')  # its connections are cut too
        answer = client.get("/api/v1/ready")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("not ready: database")
    assert answer.json()["checks"]["database"].startswith("unavailable")


def test_request_id_reaches_a_celery_task_and_its_logs(tmp_path: Path, json_lines: io.StringIO) -> None:
    import redis
    from celery.contrib.testing.worker import start_worker

    redis.Redis.from_url(BROKER).flushdb()
    celery = make_celery(Settings(data_dir=tmp_path, broker_url=BROKER, result_backend=BROKER))
    task_log = logging.getLogger("tests.celery_task")

    @celery.task(name="wardwatch.tests.log_request_id")
    def log_request_id() -> str | None:
        task_log.warning("task ran")  # the test worker sets the root level to WARNING
        return REQUEST_ID.get()

    with start_worker(celery, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        token = REQUEST_ID.set("req-0123456789abcdef")  # as RequestIdMiddleware sets it for a request
        try:
            result = celery.send_task("wardwatch.tests.log_request_id", headers=task_headers())
        finally:
            REQUEST_ID.reset(token)
        seen = result.get(timeout=60)
    assert seen == "req-0123456789abcdef"
    lines = [line for line in _lines(json_lines) if line["message"] == "task ran"]
    assert lines and lines[0]["request_id"] == "req-0123456789abcdef" and lines[0]["task_id"] == result.id
