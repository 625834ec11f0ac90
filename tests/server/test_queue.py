"""The review queue (``GET /events``) on a small data set, on SQLite and PostgreSQL: every filter and both sorts
walked page by page through the API against an order worked out here from the rows themselves; counts on the
first page only; and cursors that are malformed, tampered with or from another query refused with 422."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.session import session_scope
from server.db.tables import Event, Recording
from tests.server.queue_data import T0, Seeded, bulk_events

EVENTS = "/api/v1/events"


@pytest.fixture
def seeded(client: TestClient) -> Seeded:
    # a quarter of the recordings without a wall-clock start, so the time sort's "no start_wall last" is walked
    return bulk_events(client.app.state.session_factory.kw["bind"], 240, n_recordings=12, n_rooms=4,
                       untimed_share=0.25, seed=3)


def _rows(client: TestClient) -> list[dict[str, Any]]:
    with session_scope(client.app.state.session_factory) as session:
        rooms = dict(session.execute(select(Recording.id, Recording.room)).all())
        return [{"id": e.id, "status": e.status.value, "label": e.label, "room": rooms[e.recording_id],
                 "recording": e.recording_id, "start_wall": e.start_wall, "peak_score": e.peak_score,
                 "source": e.source.value} for e in session.scalars(select(Event))]


def _matches(row: dict[str, Any], params: dict[str, Any]) -> bool:
    """The filters of ``GET /events``, worked out in Python."""
    for name, value in params.items():
        if name in ("status", "label", "room", "recording", "source") and row[name] != value:
            return False
        if name == "min_score" and row["peak_score"] < value:
            return False
        if name in ("since", "until"):
            bound = datetime.fromisoformat(value)
            if row["start_wall"] is None or (row["start_wall"] < bound if name == "since"
                                             else row["start_wall"] >= bound):
                return False
    return True


def _expected(rows: list[dict[str, Any]], params: dict[str, Any], sort: str) -> list[int]:
    kept = [r for r in rows if _matches(r, params)]
    if sort == "score":
        return [r["id"] for r in sorted(kept, key=lambda r: (r["peak_score"], r["id"]), reverse=True)]
    timed = sorted((r for r in kept if r["start_wall"] is not None), key=lambda r: (r["start_wall"], r["id"]),
                   reverse=True)
    untimed = sorted((r for r in kept if r["start_wall"] is None), key=lambda r: r["id"], reverse=True)
    return [r["id"] for r in timed + untimed]


def _walk(client: TestClient, params: dict[str, Any], limit: int) -> tuple[list[int], dict[str, Any]]:
    """Every page of the query; returns the ids in order and the first page."""
    first = client.get(EVENTS, params={**params, "limit": limit})
    assert first.status_code == 200, first.text
    page = first.json()
    ids = [e["id"] for e in page["data"]]
    pages = 1
    while page["next_cursor"] is not None:
        answer = client.get(EVENTS, params={**params, "limit": limit, "cursor": page["next_cursor"]})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["count"] is None and page["counts"] is None  # counted on the first page only
        assert page["data"], "a cursor is only given when another page follows"
        ids += [e["id"] for e in page["data"]]
        pages += 1
    assert pages == max(1, -(-len(ids) // limit))
    return ids, first.json()


FILTERS: list[dict[str, Any]] = [
    {}, {"status": "flagged"}, {"status": "relabelled"}, {"label": "fall"}, {"room": "room-01"},
    {"min_score": 0.8}, {"source": "clinician"},
    {"since": (T0 + timedelta(days=1)).isoformat(), "until": (T0 + timedelta(days=2)).isoformat()},
    {"status": "flagged", "label": "bed_exit", "min_score": 0.6, "room": "room-02"},
]


@pytest.mark.parametrize("sort", ["time", "score"])
def test_every_filter_pages_in_order(client: TestClient, seeded: Seeded, sort: str) -> None:
    rows = _rows(client)
    assert any(r["start_wall"] is None for r in rows) and any(r["source"] == "clinician" for r in rows)
    for params in [*FILTERS, {"recording": seeded.recording_ids[5]}]:
        expected = _expected(rows, params, sort)
        assert expected or params.get("source"), params  # the data set gives each filter something to find
        ids, first = _walk(client, {**params, "sort": sort}, limit=7)
        assert ids == expected, params  # every matching event once, in the sort's order (pages disjoint)
        assert first["count"] == len(expected), params
        others = {k: v for k, v in params.items() if k != "status"}
        assert first["counts"] == {s: len(_expected(rows, {**others, "status": s}, sort))
                                   for s in ("flagged", "confirmed", "rejected", "relabelled")}, params


def test_default_is_time_and_a_full_last_page_has_no_cursor(client: TestClient, seeded: Seeded) -> None:
    total = client.get(EVENTS).json()["count"]
    assert [e["id"] for e in client.get(EVENTS, params={"limit": 500}).json()["data"]] == \
        [e["id"] for e in client.get(EVENTS, params={"limit": 500, "sort": "time"}).json()["data"]]
    whole = client.get(EVENTS, params={"limit": total}).json()
    assert len(whole["data"]) == total and whole["next_cursor"] is None


def test_events_show_source_and_room(client: TestClient, seeded: Seeded) -> None:
    rows = {r["id"]: r for r in _rows(client)}
    for event in client.get(EVENTS, params={"limit": 50}).json()["data"]:
        assert event["source"] == rows[event["id"]]["source"] and event["room"] == rows[event["id"]]["room"]
    assert {e["source"] for e in client.get(EVENTS, params={"source": "clinician"}).json()["data"]} == {"clinician"}


def _cursor(body: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


def test_bad_cursors_and_filters_are_422(client: TestClient, seeded: Seeded) -> None:
    first = client.get(EVENTS, params={"limit": 5}).json()
    by_score = client.get(EVENTS, params={"limit": 5, "sort": "score"}).json()
    flagged = client.get(EVENTS, params={"limit": 5, "status": "flagged"}).json()
    kind = json.loads(base64.urlsafe_b64decode(first["next_cursor"] + "=="))["k"]
    bad = [
        ({"cursor": "not a cursor"}, "malformed"), ({"cursor": "!!!!"}, "malformed"),
        ({"cursor": _cursor([1, 2])}, "malformed"), ({"cursor": _cursor({"k": kind})}, "malformed"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "malformed"),
        ({"cursor": _cursor({"k": kind, "v": ["2026-01-01T00:00:00+00:00", "7"]})}, "malformed"),
        ({"cursor": _cursor({"k": kind, "v": ["2026-01-01T00:00:00", 7]})}, "malformed"),  # no zone
        ({"cursor": _cursor({"k": kind, "v": ["yesterday", 7]})}, "malformed"),
        ({"cursor": _cursor({"k": kind, "v": [None, 2**40]})}, "malformed"),
        ({"cursor": _cursor({"k": kind, "v": [None, 7, 8]})}, "malformed"),
        ({"cursor": by_score["next_cursor"]}, "another sort"),  # a score cursor in the time sort
        ({"cursor": first["next_cursor"], "sort": "score"}, "another sort"),
        ({"cursor": flagged["next_cursor"]}, "other filters"),  # from status=flagged, used without it
        ({"cursor": first["next_cursor"], "label": "fall"}, "other filters"),
    ]
    for params, words in bad:
        answer = client.get(EVENTS, params=params)
        assert answer.status_code == 422, (params, answer.text)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and (words in detail or "another sort or other filters" in detail), detail
    for params in ({"cursor": "x" * 513}, {"sort": "newest"}, {"min_score": 1.5}, {"min_score": -0.1},
                   {"source": "robot"}, {"status": "done"}, {"limit": 0}, {"limit": 501},
                   {"since": "2026-01-01T00:00:00"}, {"room": "a\x00b"}):
        assert client.get(EVENTS, params=params).status_code == 422, params
    score = json.loads(base64.urlsafe_b64decode(by_score["next_cursor"] + "=="))
    score["v"][0] = 2.0
    assert client.get(EVENTS, params={"sort": "score", "cursor": _cursor(score)}).status_code == 422
