"""An app per test on the given database, in embedded mode (tasks in a thread pool of the app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.db.migrate import upgrade
from server.db.session import make_engine, make_session_factory
from server.main import create_app
from server.settings import Settings
from tests.accounts import act_as, bearer
from tests.server.webhooks_support import dripper, receiver  # noqa: F401 - fixtures of the webhook tests


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's database, migrated to head: for tests of services without an app."""
    upgrade(db_url)
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu")


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """A started app (its lifespan entered) for tests that make their own clients and credentials."""
    application = create_app(settings)
    with TestClient(application):
        yield application


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client signed in with a clinician's token (read, upload, review); admin calls add ``admin(client)``."""
    with TestClient(create_app(settings)) as test_client:
        yield act_as(test_client, "clinician")


def admin(client: TestClient) -> dict[str, str]:
    """Headers of an admin token (every scope an admin can use), for the odd admin-only call."""
    return bearer(client.app, "admin")


def wait_for_tasks(client: TestClient, timeout: float = 240) -> None:
    """Block until the embedded worker has finished what was queued."""
    client.app.state.dispatcher.wait(timeout=timeout)  # type: ignore[attr-defined]


def upload(client: TestClient, path: Path, name: str | None = None, **form: str):  # type: ignore[no-untyped-def]
    with path.open("rb") as handle:
        return client.post("/api/v1/recordings", files={"file": (name or path.name, handle, "video/mp4")},
                           data=form)
