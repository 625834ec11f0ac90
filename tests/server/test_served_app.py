"""``served_app``: the app a serving process runs has its start-up objects out of the garbage collector's reach,
so a full collection under load does not hold every request for a quarter of a second (the load benchmark's
p99 tail, issue 12)."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from server.main import served_app
from server.settings import Settings


def test_start_up_objects_are_frozen_and_requests_still_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=None, broker_url=None, device="cpu")
    try:
        app = served_app(settings)
        frozen = gc.get_freeze_count()
        walked = gc.get_objects()  # what a full collection still walks
        assert frozen > 100_000  # the imports (PyTorch, FastAPI, SQLAlchemy) and the app
        assert len(walked) < frozen / 10
        assert not any(item is app for item in walked)  # the app itself is out of the collector's reach
        del walked
        with TestClient(app) as client:
            assert client.get("/api/v1/health").json()["status"] == "ok"
            assert client.get("/api/v1/events").status_code == 401  # the guarded API is there
    finally:
        gc.unfreeze()  # this test process builds many apps: back to the collector
