"""Shared fixtures: real SQLite and PostgreSQL databases, real Redis, synthetic videos made by the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

PG_ADMIN = os.environ.get("WARDWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WARDWATCH_TEST_REDIS", "redis://127.0.0.1:6379")
# Test modules that use the machine's Redis each have a database number of their own, and a module's tests run in
# one test process one after another (pyproject.toml: --dist loadfile), so two modules never share a database:
# 9 test_distributed, 10 test_webhooks, 11 test_webhook_hardening, 12 test_ready_and_logs, 13 test_schemathesis,
# 14 test_faults_celery. RabbitMQ tests make a virtual host each; the broker-restart tests run private brokers.


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every item an id of its own: schemathesis's items (one per API operation) share their function's id,
    and the two test processes (pytest-xdist) tell items apart by id."""
    from _pytest.nodeid import NodeId

    for item in items:
        head, _, last = item.nodeid.rpartition("::")
        if head and last != item.name:
            item._id = NodeId.parse(f"{head}::{item.name}")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def _admin_exec(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session, migrated to head once; tests clone it."""
    from server.db.migrate import upgrade

    name = f"wardwatch_tpl_{uuid.uuid4().hex[:10]}"
    _admin_exec(f'CREATE DATABASE "{name}"')
    try:
        upgrade(_pg_url(name))
        yield name
    finally:
        _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database per test, cloned from the migrated template (fast, fully isolated)."""
    name = f"wardwatch_t_{uuid.uuid4().hex[:10]}"
    _admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _pg_url(name)
    finally:
        _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wardwatch.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def ward_video(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A short synthetic ward recording with events, shared by the server tests (made once)."""
    from ingest.synthetic import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("ward"), SynthConfig(seconds=36, seed=11, events_per_minute=5))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn, configured as ``wardwatch serve`` does, on a free loopback port in a
    thread; yields its base URL."""
    import uvicorn

    from server.serving import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, app.state.settings, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
