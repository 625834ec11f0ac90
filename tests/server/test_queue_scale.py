"""The review queue at 100,000 events in PostgreSQL (issue 11: "paging that stays fast with 100,000 events").

Bulk-inserted events (``tests.server.queue_data``), then through the API (TestClient: the whole stack,
authentication and the audit entry of each read included):

* one full walk of the default queue, 500 a page: all 100,000 events exactly once, in order;
* for each sort and the filtered queries, the first page and a deep page (the cursor after the ~50,000th
  match, or the middle of fewer): the same events, in the same order, as the reference query below (written
  apart from the service: OFFSET, ``NULLS LAST``), and the next page carries on where the deep page ends.

The response times (median of 5 requests) are printed (``pytest -s``) and recorded as test properties; the only
timed assertion is a generous bound, since the machine is shared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from server.db.session import session_scope
from server.db.tables import Event, EventSource, EventStatus
from server.main import create_app
from server.services.event_queue import EventFilter, QueueSort, cursor_after
from server.settings import Settings
from tests.accounts import act_as
from tests.conftest import _admin_exec, _pg_url
from tests.server.queue_data import T0, bulk_events

N_EVENTS = 100_000
DEEP = 50_000
BOUND_SECONDS = 1.5
SINCE = T0 + timedelta(days=10)
# (name, query parameters, the same as an EventFilter, the reference WHERE clause)
CASES: list[tuple[str, dict[str, Any], EventFilter, str]] = [
    ("all", {}, EventFilter(), "TRUE"),
    ("flagged", {"status": "flagged"}, EventFilter(status=EventStatus.flagged), "e.status = 'flagged'"),
    ("label+since", {"label": "fall", "since": SINCE.isoformat()}, EventFilter(label="fall", since=SINCE),
     f"e.label = 'fall' AND e.start_wall >= '{SINCE.isoformat()}'"),
    ("room", {"room": "room-03"}, EventFilter(room="room-03"), "r.room = 'room-03'"),
    ("min_score", {"min_score": 0.9}, EventFilter(min_score=0.9), "e.peak_score >= 0.9"),
    ("clinician", {"source": "clinician"}, EventFilter(source=EventSource.clinician), "e.source = 'clinician'"),
    ("flagged+label+min_score", {"status": "flagged", "label": "fall", "min_score": 0.8},
     EventFilter(status=EventStatus.flagged, label="fall", min_score=0.8),
     "e.status = 'flagged' AND e.label = 'fall' AND e.peak_score >= 0.8"),
]
ORDER = {"time": "e.start_wall DESC NULLS LAST, e.id DESC", "score": "e.peak_score DESC, e.id DESC"}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, pg_template: str) -> Iterator[TestClient]:
    """One PostgreSQL database with 100,000 events for the module (made once: the insert is the slow part)."""
    name = f"wardwatch_q_{time.monotonic_ns() % 10**10}"
    _admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        settings = Settings(data_dir=tmp_path_factory.mktemp("big") / "data", database_url=_pg_url(name),
                            broker_url=None, device="cpu")
        with TestClient(create_app(settings)) as client:
            engine = client.app.state.session_factory.kw["bind"]
            started = time.perf_counter()
            bulk_events(engine, N_EVENTS, n_recordings=200, n_rooms=20, seed=7)
            print(f"\n[queue] bulk insert of {N_EVENTS:,} events: {time.perf_counter() - started:.1f} s")
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE event, recording"))  # what autovacuum does for a live database
            yield act_as(client, "clinician")
    finally:
        _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reference(client: TestClient, where: str, sort: str, offset: int, limit: int) -> list[int]:
    sql = (f"SELECT e.id FROM event e JOIN recording r ON r.id = e.recording_id WHERE {where} "
           f"ORDER BY {ORDER[sort]} OFFSET {offset} LIMIT {limit}")
    with session_scope(client.app.state.session_factory) as session:
        return list(session.execute(text(sql)).scalars())


def _matching(client: TestClient, where: str) -> int:
    sql = f"SELECT count(*) FROM event e JOIN recording r ON r.id = e.recording_id WHERE {where}"
    with session_scope(client.app.state.session_factory) as session:
        return int(session.execute(text(sql)).scalar_one())


def _median_seconds(call: Callable[[], Any], times: int = 5) -> float:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        taken.append(time.perf_counter() - started)
    return statistics.median(taken)


def _get(client: TestClient, params: dict[str, Any]) -> dict[str, Any]:
    answer = client.get("/api/v1/events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_full_walk_returns_every_event_once_in_order(big: TestClient) -> None:
    ids: list[int] = []
    cursor = None
    started = time.perf_counter()
    while True:
        page = _get(big, {"limit": 500} | ({"cursor": cursor} if cursor else {}))
        ids += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    print(f"\n[queue] full walk, 200 pages of 500: {time.perf_counter() - started:.1f} s")
    assert len(ids) == len(set(ids)) == N_EVENTS
    assert ids == _reference(big, "TRUE", "time", 0, N_EVENTS)


@pytest.mark.parametrize("sort", ["time", "score"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_first_and_deep_pages(big: TestClient, record_property: Callable[[str, object], None], sort: str,
                              case: tuple[str, dict[str, Any], EventFilter, str]) -> None:
    name, params, filters, where = case
    params = {**params, "sort": sort, "limit": 50}
    total = _matching(big, where)
    assert total > 100, name  # the data set gives every case pages to walk

    first = _get(big, params)
    assert first["count"] == total
    assert [e["id"] for e in first["data"]] == _reference(big, where, sort, 0, 50)
    second = _get(big, {**params, "cursor": first["next_cursor"]})
    assert [e["id"] for e in second["data"]] == _reference(big, where, sort, 50, 50)  # disjoint, in order

    deep_at = min(DEEP, total // 2)
    before = _reference(big, where, sort, deep_at - 1, 1)[0]
    with session_scope(big.app.state.session_factory) as session:
        event = session.get(Event, before)
        assert event is not None
        cursor = cursor_after(event, filters=filters, sort=QueueSort(sort))
    deep = _get(big, {**params, "cursor": cursor})
    expected = _reference(big, where, sort, deep_at, 100)
    assert [e["id"] for e in deep["data"]] == expected[:50] and deep["count"] is None
    after = _get(big, {**params, "cursor": deep["next_cursor"]})
    assert [e["id"] for e in after["data"]] == expected[50:100]

    first_s = _median_seconds(lambda: _get(big, params))
    deep_s = _median_seconds(lambda: _get(big, {**params, "cursor": cursor}))
    print(f"\n[queue] {name:24s} sort={sort:5s} matches={total:6d}  first page {first_s * 1000:6.1f} ms   "
          f"deep page (after {deep_at:,}) {deep_s * 1000:6.1f} ms")
    record_property(f"{name}/{sort}/first_ms", round(first_s * 1000, 1))
    record_property(f"{name}/{sort}/deep_ms", round(deep_s * 1000, 1))
    assert first_s < BOUND_SECONDS and deep_s < BOUND_SECONDS
