"""The API under concurrent load keeps answering (issue 12): 50 clients twice in a row on a real server and the
real PostgreSQL get answers (200, or 503 with Retry-After when it sheds load), never a dropped connection or
a hang, and every pooled connection is back afterwards; a pool that is exhausted anyway answers 503 with
Retry-After within the short pool timeout, and the server recovers once a connection is free."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, insert

from server.db.session import session_scope
from server.db.tables import Event, EventStatus, Recording, RecordingStatus
from server.main import create_app
from server.services.models import get_active_model
from server.settings import Settings
from tests.accounts import bearer
from tests.conftest import running_server

pytestmark = pytest.mark.postgres
CLIENTS = 50
RUN_SECONDS = 3.0
EVENTS = 2_000


def _seed_events(app: object, count: int) -> tuple[int, int]:
    """``count`` events on one recording, inserted in bulk; returns the first and last id."""
    with session_scope(app.state.session_factory) as session:  # type: ignore[attr-defined]
        version = get_active_model(session=session)
        assert version is not None
        recording_id = session.scalar(insert(Recording).returning(Recording.id),
                                      [{"source": "load.mp4", "status": RecordingStatus.scored}])
        now = datetime.now(UTC)
        ids = list(session.scalars(insert(Event).returning(Event.id), [
            {"recording_id": recording_id, "label": version.class_names[n % len(version.class_names)],
             "start": float(n), "end": n + 5.0, "start_wall": now - timedelta(minutes=n), "peak_score": 0.9,
             "peak_time": n + 1.0, "model_version_id": version.id,
             "status": EventStatus.flagged if n % 3 else EventStatus.confirmed} for n in range(count)]))
    return ids[0], ids[-1]


def _engine(app: object) -> Engine:
    return app.state.session_factory.kw["bind"]  # type: ignore[attr-defined,no-any-return]


async def _client(client: httpx.AsyncClient, ids: tuple[int, int], until: float, seed: int,
                  outcomes: Counter[str]) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        if rng.random() < 0.8:
            request = client.get("/api/v1/events", params={"status": "flagged", "limit": 50})
        else:
            request = client.post(f"/api/v1/events/{rng.randint(*ids)}/review", json={"decision": "confirmed"})
        try:
            answer = await request
        except httpx.HTTPError as exc:  # a dropped connection or a timeout: what the issue saw
            outcomes[type(exc).__name__] += 1
            continue
        if answer.status_code == 503 and answer.headers.get("retry-after") and answer.json().get("detail"):
            outcomes["503 + Retry-After"] += 1
            await asyncio.sleep(0.1)
        else:
            outcomes[str(answer.status_code)] += 1


async def _load(base: str, headers: dict[str, str], ids: tuple[int, int], seed: int) -> Counter[str]:
    """``CLIENTS`` clients, each on its own connection, for ``RUN_SECONDS``."""
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=20, limits=limits) as client:
        until = time.monotonic() + RUN_SECONDS
        await asyncio.gather(*(_client(client, ids, until, seed * 100 + n, outcomes) for n in range(CLIENTS)))
    return outcomes


def _wait_all_checked_in(engine: Engine, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while engine.pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    return int(engine.pool.checkedout())  # type: ignore[attr-defined]


def test_fifty_clients_twice_in_a_row(pg_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=None, device="cpu",
                              api_threads=16))
    ids = _seed_events(app, EVENTS)
    headers = bearer(app, "clinician")
    with running_server(app) as base:
        runs = [asyncio.run(_load(base, headers, ids, seed)) for seed in (1, 2)]
        checked_out = _wait_all_checked_in(_engine(app))
        after = httpx.get(f"{base}/api/v1/events", params={"limit": 1}, headers=headers, timeout=10)
    for outcomes in runs:
        assert set(outcomes) <= {"200", "503 + Retry-After"}, outcomes
        assert sum(outcomes.values()) >= CLIENTS and outcomes["200"] > 0, outcomes  # every client was answered
    assert checked_out == 0
    assert after.status_code == 200


def test_exhausted_pool_answers_503_then_recovers(pg_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=None, device="cpu",
                              db_pool_size=1, db_pool_overflow=0, db_pool_timeout_seconds=0.5, api_threads=4,
                              purge_interval_minutes=0, webhook_sweep_seconds=3600))
    assert app.state.db_admission.slots == 1
    headers = bearer(app, "clinician")
    engine = _engine(app)
    with running_server(app) as base:
        assert _wait_all_checked_in(engine) == 0  # start-up's housekeeping and sweep are done
        held = engine.connect()  # the pool's only connection, as a stuck background task would hold it
        try:
            async def burst() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=20) as client:
                    return list(await asyncio.gather(*(client.get("/api/v1/events") for _ in range(6))))

            started = time.monotonic()
            answers = asyncio.run(burst())
            waited = time.monotonic() - started
        finally:
            held.close()
        recovered = httpx.get(f"{base}/api/v1/events", headers=headers, timeout=10)
        checked_out = _wait_all_checked_in(engine)
    assert [a.status_code for a in answers] == [503] * 6
    for answer in answers:
        assert answer.headers["retry-after"] == "1"
        assert "busy" in answer.json()["detail"]
    assert waited < 10  # the short pool timeout, not SQLAlchemy's 30 s (a generous bound)
    assert recovered.status_code == 200
    assert checked_out == 0
