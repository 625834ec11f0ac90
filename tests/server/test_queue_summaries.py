"""What the review queue now reads instead of recomputing it per request (issue 12), checked against the
recomputation: the per-status totals the database triggers keep (through inserts, reviews, undos, a recording's
cascading delete and the folding of the deltas), and ``event.agreement``, kept with the explanations it repeats
and backfilled by migration 0014."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text

from server.db.migrate import downgrade, upgrade
from server.db.session import make_engine
from server.db.tables import Event, EventStatus, EventStatusDelta, Explanation, Recording
from server.services import event_counts
from server.services.event_counts import fold, status_totals
from tests.server.queue_data import bulk_events

EVENTS = 300


def _recounted(session) -> dict[str, int]:  # type: ignore[no-untyped-def]
    found = dict(session.execute(select(Event.status, func.count()).group_by(Event.status)).all())
    return {s.value: int(found.get(s, 0)) for s in EventStatus}


def _kept(session) -> dict[str, int]:  # type: ignore[no-untyped-def]
    totals = status_totals(session=session)
    return {s.value: totals.get(s.value, 0) for s in EventStatus}


def test_kept_totals_follow_every_change(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    app = client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    seeded = bulk_events(factory.kw["bind"], EVENTS, n_recordings=6, seed=3)
    with factory() as session:
        assert _kept(session) == _recounted(session) and sum(_recounted(session).values()) == EVENTS
        ids = list(session.scalars(select(Event.id).where(Event.status == EventStatus.flagged).limit(4)))
    for event_id, decision in zip(ids, ["confirmed", "rejected", "confirmed", "rejected"], strict=True):
        assert client.post(f"/api/v1/events/{event_id}/review", json={"decision": decision}).status_code == 200
    assert client.post(f"/api/v1/events/{ids[0]}/review/undo").status_code == 200
    assert client.post(f"/api/v1/events/{ids[1]}/review", json={"decision": "rejected"}).status_code == 200  # same
    with factory() as session:
        assert _kept(session) == _recounted(session)
        session.execute(delete(Recording).where(Recording.id == seeded.recording_ids[0]))  # cascades to events
        session.commit()
        assert _kept(session) == _recounted(session) and sum(_kept(session).values()) < EVENTS
    # what the API answers is the same as a fresh count, with and without a status filter
    with factory() as session:
        expected = _recounted(session)
    for params in ({}, {"status": "flagged"}):
        body = client.get("/api/v1/events", params={"limit": 1, **params}).json()
        assert body["counts"] == expected
        assert body["count"] == (expected["flagged"] if params else sum(expected.values()))
    # folding keeps the sums and leaves one row per status
    monkeypatch.setattr(event_counts, "FOLD_AT", 3)
    with factory() as session:
        before = session.scalar(select(func.count()).select_from(EventStatusDelta))
        assert before > 3
        assert _kept(session) == expected  # finds too many rows: folds them
        session.commit()
        rows = session.scalar(select(func.count()).select_from(EventStatusDelta))
        assert rows <= len(EventStatus) < before
        assert _kept(session) == expected
        assert fold(session=session)  # folding folded rows changes nothing
        session.commit()
        assert _kept(session) == expected


def test_agreement_follows_its_explanations(client: TestClient) -> None:
    """Whoever writes explanations (the scoring pipeline adds them by ``event_id``), ``event.agreement`` is the
    first of them, by id, with an agreement; and the queue, the event and its explanations say the same."""
    app = client.app
    factory = app.state.session_factory  # type: ignore[attr-defined]
    bulk_events(factory.kw["bind"], 3, n_recordings=1, seed=5)
    with factory() as session:
        first, second, third = session.scalars(select(Event.id).order_by(Event.id)).all()
        session.add_all([
            Explanation(event_id=first, method="grad_cam", key_frame_time=1.0, overlay_path="a.png", agreement=None),
            Explanation(event_id=first, method="guided_backprop", key_frame_time=1.0, overlay_path="b.png",
                        agreement=0.625),
            Explanation(event_id=first, method="guided_grad_cam", key_frame_time=1.0, overlay_path="c.png",
                        agreement=0.125),
            Explanation(event_id=second, method="grad_cam", key_frame_time=1.0, overlay_path="d.png", agreement=None),
            Explanation(event_id=third, method="grad_cam", key_frame_time=1.0, overlay_path="e.png", agreement=-0.5),
        ])
        session.commit()
        assert _agreements(session) == {first: 0.625, second: None, third: -0.5}
        # a changed or removed explanation moves it along
        session.execute(text("UPDATE explanation SET agreement = 0.5 WHERE overlay_path = 'a.png'"))
        session.execute(text("DELETE FROM explanation WHERE overlay_path = 'e.png'"))
        session.commit()
        assert _agreements(session) == {first: 0.5, second: None, third: None}
    listed = {e["id"]: e for e in client.get("/api/v1/events", params={"limit": 10}).json()["data"]}
    for event_id in (first, second, third):
        explanations = client.get(f"/api/v1/events/{event_id}/explanations").json()["data"]
        shown = next((x["agreement"] for x in explanations if x["agreement"] is not None), None)
        assert listed[event_id]["agreement"] == shown
        assert client.get(f"/api/v1/events/{event_id}").json()["agreement"] == shown


def _agreements(session) -> dict[int, float | None]:  # type: ignore[no-untyped-def]
    return dict(session.execute(select(Event.id, Event.agreement)).all())


def test_migration_0014_backfills_agreement_and_totals(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    downgrade(db_url, "0010")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO model_version (id, name, architecture, class_names, input_spec, "
                              "checkpoint_path, checkpoint_sha256, metrics, state, created_at) VALUES (90, 'm', 'a', "
                              "'[\"fall\"]', '{}', 'p', 'sha-0014', '{}', 'retired', '2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO recording (id, source, status, warnings, clip_count, created_at, "
                              "updated_at) VALUES (90, 's.mp4', 'scored', '[]', 0, '2026-01-01T00:00:00+00:00', "
                              "'2026-01-01T00:00:00+00:00')"))
            for event_id, status in ((90, "confirmed"), (91, "flagged"), (92, "flagged")):  # one start each (0011)
                conn.execute(text("INSERT INTO event (id, recording_id, label, start, \"end\", peak_score, peak_time, "
                                  "model_version_id, status, created_at) VALUES (:id, 90, 'fall', :start, :start + 1, "
                                  "0.5, 0.5, 90, :status, '2026-01-01T00:00:00+00:00')"),
                             {"id": event_id, "status": status, "start": float(event_id - 90) * 10})
            for event_id, method, agreement in ((90, "grad_cam", None), (90, "guided_backprop", 0.75),
                                                (90, "guided_grad_cam", 0.25), (91, "grad_cam", None)):
                conn.execute(text("INSERT INTO explanation (event_id, method, key_frame_time, overlay_path, agreement, "
                                  "created_at) VALUES (:e, :m, 0.5, 'o.png', :a, '2026-01-01T00:00:00+00:00')"),
                             {"e": event_id, "m": method, "a": agreement})
        upgrade(db_url)
        with engine.connect() as conn:
            agreements = dict(conn.execute(text("SELECT id, agreement FROM event ORDER BY id")).all())
            assert agreements == {90: 0.75, 91: None, 92: None}
            totals = dict(conn.execute(text("SELECT status, sum(n) FROM event_status_delta GROUP BY status")).all())
            assert {k: int(v) for k, v in totals.items()} == {"confirmed": 1, "flagged": 2}
            assert conn.execute(text("SELECT value FROM auth_epoch WHERE id = 1")).scalar_one() == 0
        downgrade(db_url, "0010")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM event")).scalar_one() == 3
            assert conn.execute(text("SELECT count(*) FROM explanation")).scalar_one() == 4
        upgrade(db_url)
    finally:
        engine.dispose()


def test_the_queue_and_the_event_say_why_media_is_missing(client: TestClient) -> None:
    """``media_error`` (a live stream's archive could not give a clip) is one of the columns a page shows."""
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    bulk_events(factory.kw["bind"], 2, n_recordings=1, seed=6)
    with factory() as session:
        broken, fine = session.scalars(select(Event.id).order_by(Event.id)).all()
        session.execute(text("UPDATE event SET media_error = 'archive segment seg-3.ts is damaged' WHERE id = :id"),
                        {"id": broken})
        session.commit()
    listed = {e["id"]: e for e in client.get("/api/v1/events", params={"limit": 10}).json()["data"]}
    assert listed[broken]["media_error"] == "archive segment seg-3.ts is damaged"
    assert listed[fine]["media_error"] is None
    assert client.get(f"/api/v1/events/{broken}").json()["media_error"] == "archive segment seg-3.ts is damaged"
