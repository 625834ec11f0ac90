"""A write's response is sent only after its transaction committed: a client that reads right after it (another
connection, a real HTTP server) sees the change, even when the commit is slow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from server.db.tables import ModelState, ModelVersion
from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer
from tests.conftest import running_server

COMMIT_DELAY = 0.6  # seconds: wide enough that a response sent before the commit would be seen


@pytest.fixture
def slow_commit_server(tmp_path: Path) -> Iterator[tuple[str, object]]:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        yield base, app


def test_activation_is_committed_before_the_response(slow_commit_server) -> None:  # type: ignore[no-untyped-def]
    base, app = slow_commit_server
    factory = app.state.session_factory
    with factory() as session:  # a second version of the shipped model, as an older fine-tune would be
        active = session.query(ModelVersion).one()
        twin = ModelVersion(name="twin", architecture=active.architecture, class_names=active.class_names,
                            input_spec=active.input_spec, checkpoint_path=active.checkpoint_path,
                            checkpoint_sha256="0" * 64, metrics={}, state=ModelState.candidate)
        session.add(twin)
        session.commit()
        twin_id, active_id = twin.id, active.id

    def slow(session: object) -> None:
        time.sleep(COMMIT_DELAY)

    event.listen(factory, "before_commit", slow)
    try:
        headers = bearer(app, "admin")
        with httpx.Client(base_url=base, timeout=30, headers=headers) as writer, \
                httpx.Client(base_url=base, timeout=30, headers=headers) as reader:
            answer = writer.post(f"/api/v1/models/{twin_id}/activate")
            assert answer.status_code == 200 and answer.json()["state"] == "active"
            states = {m["id"]: m["state"] for m in reader.get("/api/v1/models").json()}
    finally:
        event.remove(factory, "before_commit", slow)
    assert states == {twin_id: "active", active_id: "retired"}
