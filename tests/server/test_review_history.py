"""Review history (issue: access/audit): every review is kept, the event shows the latest one not undone, undo
takes back the caller's own latest review, a relabel stays within the classes of the event's model, the
history pages, review and undo are audited, fine-tuning sees only the current state, the migration backfills
and the database refuses to rewrite a decision."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, Table, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from server.db.base import utcnow
from server.db.migrate import downgrade, upgrade
from server.db.session import make_engine, session_scope
from server.db.tables import Clip, Event, EventReview, ModelVersion, Recording, RecordingStatus
from server.training_data import NotEnoughDataError, build_finetune_data
from tests.accounts import bearer
from tests.server.access import Seeded, seed, signed_in

CLASSES = "bed_exit, fall, rhythmic_movement"  # the demo model's classes; the seeded event is a "fall"


@pytest.fixture
def rows(app: Any) -> Seeded:
    return seed(app)


def _review(app: Any, event_id: int, headers: dict[str, str], **body: Any) -> Any:
    return TestClient(app).post(f"/api/v1/events/{event_id}/review", json=body, headers=headers)


def _undo(app: Any, event_id: int, headers: dict[str, str]) -> Any:
    return TestClient(app).post(f"/api/v1/events/{event_id}/review/undo", headers=headers)


def _event(app: Any, event_id: int) -> dict[str, Any]:
    return TestClient(app).get(f"/api/v1/events/{event_id}", headers=bearer(app, "auditor")).json()


def _history(app: Any, event_id: int, **params: Any) -> dict[str, Any]:
    answer = TestClient(app).get(f"/api/v1/events/{event_id}/reviews", params=params,
                                 headers=bearer(app, "auditor"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_later_review_is_added_not_overwritten(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    first = _review(app, rows.event_id, nurse, decision="confirmed", note="on the floor")
    assert first.status_code == 200 and first.json()["status"] == "confirmed"
    second = _review(app, rows.event_id, nurse, decision="relabelled", label="bed_exit", note="got up, did not fall")
    assert second.status_code == 200, second.text
    event = _event(app, rows.event_id)
    assert (event["status"], event["reviewed_label"], event["note"]) == ("relabelled", "bed_exit",
                                                                         "got up, did not fall")
    assert event["label"] == "fall"  # what the model flagged stays as it was
    history = _history(app, rows.event_id)
    assert history["count"] == 2 and history["next_cursor"] is None
    newest, oldest = history["data"]
    assert (newest["decision"], newest["label"], oldest["decision"], oldest["label"]) == (
        "relabelled", "bed_exit", "confirmed", None)
    assert oldest["note"] == "on the floor" and newest["id"] > oldest["id"]
    assert {r["reviewer"] for r in history["data"]} == {"test-clinician"}
    assert all(r["token_id"] and r["reviewer_id"] and r["undone_at"] is None for r in history["data"])
    assert event["reviewed_at"] == newest["created_at"]


def test_undo_goes_back_one_review_at_a_time(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    confirmed = _review(app, rows.event_id, nurse, decision="confirmed", note="seen").json()
    _review(app, rows.event_id, nurse, decision="relabelled", label="rhythmic_movement")

    once = _undo(app, rows.event_id, nurse)
    assert once.status_code == 200, once.text
    assert (once.json()["status"], once.json()["reviewed_label"], once.json()["note"]) == ("confirmed", None, "seen")
    assert once.json()["reviewed_at"] == confirmed["reviewed_at"] and once.json()["reviewer"] == "test-clinician"
    assert _event(app, rows.event_id)["status"] == "confirmed"

    twice = _undo(app, rows.event_id, nurse)
    assert twice.status_code == 200
    back = twice.json()
    assert (back["status"], back["reviewer"], back["reviewed_at"], back["note"], back["reviewed_label"]) == (
        "flagged", None, None, None, None)
    queue = TestClient(app).get("/api/v1/events", params={"status": "flagged"}, headers=nurse).json()
    assert rows.event_id in [e["id"] for e in queue["data"]]  # back in the queue to review

    nothing = _undo(app, rows.event_id, nurse)
    assert nothing.status_code == 409 and nothing.json()["detail"] == f"event {rows.event_id} has no review to undo"
    history = _history(app, rows.event_id)["data"]
    assert [r["decision"] for r in history] == ["relabelled", "confirmed"]  # nothing deleted
    assert all(r["undone_at"] and r["undone_by"] == "test-clinician" for r in history)
    assert history[0]["undone_at"] < history[1]["undone_at"]  # the relabel was taken back first

    again = _review(app, rows.event_id, nurse, decision="rejected")
    assert again.json()["status"] == "rejected" and _history(app, rows.event_id)["count"] == 3


def test_only_the_reviewer_can_undo_their_review(app: Any, rows: Seeded) -> None:
    jo, sam = bearer(app, "clinician", username="nurse.jo"), bearer(app, "clinician", username="dr.sam")
    _review(app, rows.event_id, jo, decision="confirmed")
    refused = _undo(app, rows.event_id, sam)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (f"the latest review of event {rows.event_id} is by nurse.jo: only they can "
                                        "undo it (review the event again to record your own decision)")
    assert _event(app, rows.event_id)["status"] == "confirmed"

    assert _review(app, rows.event_id, sam, decision="rejected").status_code == 200
    assert _undo(app, rows.event_id, jo).status_code == 409  # jo's review is no longer the latest: sam's stands
    assert _event(app, rows.event_id)["reviewer"] == "dr.sam"
    # the same clinician through another credential (a browser session instead of the token) may undo
    browser, csrf = signed_in(app, "clinician", username="dr.sam")
    undone = browser.post(f"/api/v1/events/{rows.event_id}/review/undo", headers={"X-CSRF-Token": csrf})
    assert undone.status_code == 200 and (undone.json()["status"], undone.json()["reviewer"]) == ("confirmed",
                                                                                                  "nurse.jo")
    for role in ("admin", "auditor"):  # a review is a clinical act, so is taking it back
        answer = _undo(app, rows.event_id, bearer(app, role))
        assert answer.status_code == 403 and f"the {role} role may not do this" == answer.json()["detail"]
    assert _undo(app, 987654, jo).status_code == 404


def _undo_named(app: Any, event_id: int, headers: dict[str, str], body: Any) -> Any:
    return TestClient(app).post(f"/api/v1/events/{event_id}/review/undo", json=body, headers=headers)


def test_an_undo_naming_its_review_is_safe_to_repeat(app: Any, rows: Seeded) -> None:
    """``{"review_id": ...}``: the undo takes back that review only while it is the caller's latest standing one;
    a repeated (retried, double-clicked) undo is a 409 and leaves the review below it standing."""
    jo, sam = bearer(app, "clinician", username="nurse.jo"), bearer(app, "clinician", username="dr.sam")
    _review(app, rows.event_id, jo, decision="confirmed", note="first")
    _review(app, rows.event_id, jo, decision="rejected")
    top, below = (r["id"] for r in _history(app, rows.event_id)["data"])

    undone = _undo_named(app, rows.event_id, jo, {"review_id": top})
    assert undone.status_code == 200 and (undone.json()["status"], undone.json()["note"]) == ("confirmed", "first")
    again = _undo_named(app, rows.event_id, jo, {"review_id": top})
    assert again.status_code == 409
    assert again.json()["detail"] == (f"review {top} of event {rows.event_id} is already undone (by nurse.jo): "
                                      "nothing was changed")
    assert _event(app, rows.event_id)["status"] == "confirmed"  # the review below was not taken back
    assert [r["undone_at"] is None for r in _history(app, rows.event_id)["data"]] == [False, True]

    # someone reviewed after it: the named review is no longer the latest
    _review(app, rows.event_id, sam, decision="rejected")
    late = _undo_named(app, rows.event_id, jo, {"review_id": below})
    assert late.status_code == 409 and "no longer the latest" in late.json()["detail"]
    assert _event(app, rows.event_id)["reviewer"] == "dr.sam"
    # naming someone else's latest review does not make it yours
    latest = _history(app, rows.event_id)["data"][0]["id"]
    assert "only they can undo" in _undo_named(app, rows.event_id, jo, {"review_id": latest}).json()["detail"]

    # a review of another event, or none at all: 404; not an id, extra fields: 422; an empty body: the latest
    with session_scope(app.state.session_factory) as session:
        event = session.get(Event, rows.event_id)
        assert event is not None
        other = Event(recording_id=event.recording_id, label="fall", start=5.0, end=6.0, peak_score=0.8,
                      peak_time=5.5, model_version_id=event.model_version_id)
        session.add(other)
        session.flush()
        other_id = other.id
    assert _undo_named(app, other_id, sam, {"review_id": latest}).status_code == 404
    assert _undo_named(app, rows.event_id, sam, {"review_id": 987654}).status_code == 404
    for body in ({"review_id": 0}, {"review_id": 2**31}, {"review_id": "top"}, {"review_id": latest, "x": 1}):
        assert _undo_named(app, rows.event_id, sam, body).status_code == 422, body
    assert _event(app, rows.event_id)["reviewer"] == "dr.sam"  # none of those changed anything
    emptied = _undo_named(app, rows.event_id, sam, {})
    assert emptied.status_code == 200 and emptied.json()["status"] == "confirmed"


def test_a_relabel_stays_within_the_classes_of_the_event_s_model(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    outside = _review(app, rows.event_id, nurse, decision="relabelled", label="sleeping")
    assert outside.status_code == 422
    assert outside.json()["detail"] == (f"label 'sleeping' is not a class of model version {rows.model_id}, which "
                                        f"flagged event {rows.event_id}; allowed labels: {CLASSES}")
    assert _event(app, rows.event_id)["status"] == "flagged" and _history(app, rows.event_id)["count"] == 0
    same = _review(app, rows.event_id, nurse, decision="relabelled", label="fall")  # the flag's own label
    assert same.status_code == 200 and same.json()["reviewed_label"] == "fall"

    # an event flagged by another model version (not the active one) is held to that version's classes
    with session_scope(app.state.session_factory) as session:
        other = ModelVersion(name="ward-v0", architecture="tiny3d", class_names=["fall", "seizure"], input_spec={},
                             checkpoint_path="/nowhere.pt", checkpoint_sha256="0" * 64)
        session.add(other)
        session.flush()
        old = Event(recording_id=rows.recording_id, label="seizure", start=5.0, end=6.0, peak_score=0.8,
                    peak_time=5.5, model_version_id=other.id)
        session.add(old)
        session.flush()
        old_id, other_id = old.id, other.id
    refused = _review(app, old_id, nurse, decision="relabelled", label="bed_exit")
    assert refused.status_code == 422 and refused.json()["detail"].endswith("allowed labels: fall, seizure")
    assert f"model version {other_id}" in refused.json()["detail"]
    assert _review(app, old_id, nurse, decision="relabelled", label="fall").status_code == 200


def test_notes_must_be_absent_or_say_something_and_not_too_long(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    for note in ("", "   \n", "x" * 4001):
        answer = _review(app, rows.event_id, nurse, decision="confirmed", note=note)
        assert answer.status_code == 422, note[:10]
        assert answer.json()["detail"]
    blank = _review(app, rows.event_id, nurse, decision="confirmed", note=" ").json()["detail"][0]["msg"]
    assert "leave 'note' out" in blank
    assert _history(app, rows.event_id)["count"] == 0
    assert _review(app, rows.event_id, nurse, decision="confirmed", note="x" * 4000).status_code == 200
    assert _review(app, rows.event_id, nurse, decision="rejected").json()["note"] is None


def test_the_history_pages_newest_first(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    decisions = [{"decision": "confirmed"}, {"decision": "rejected"}, {"decision": "relabelled", "label": "bed_exit"},
                 {"decision": "confirmed", "note": "4"}, {"decision": "rejected", "note": "5"}]
    for body in decisions:
        assert _review(app, rows.event_id, nurse, **body).status_code == 200
    assert _undo(app, rows.event_id, nurse).status_code == 200
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _history(app, rows.event_id, limit=2, **({"cursor": cursor} if cursor else {}))
        assert page["count"] == 5 and len(page["data"]) <= 2
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [r["id"] for r in seen]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    assert [r["decision"] for r in seen] == ["rejected", "confirmed", "relabelled", "rejected", "confirmed"]
    assert seen[0]["undone_at"] and not any(r["undone_at"] for r in seen[1:])
    assert _event(app, rows.event_id)["note"] == "4"  # the event shows the newest standing review
    client = TestClient(app)
    auditor = bearer(app, "auditor")
    assert client.get("/api/v1/events/987654/reviews", headers=auditor).status_code == 404
    assert client.get(f"/api/v1/events/{rows.event_id}/reviews", params={"limit": 0}, headers=auditor
                      ).status_code == 422


def _trail(app: Any, **filters: Any) -> list[dict[str, Any]]:
    answer = TestClient(app).get("/api/v1/audit", params={"limit": 500, **filters}, headers=bearer(app, "auditor"))
    assert answer.status_code == 200
    return answer.json()["data"]


def test_reviews_undos_and_history_reads_are_audited(app: Any, rows: Seeded) -> None:
    jo, sam = bearer(app, "clinician", username="nurse.jo"), bearer(app, "clinician", username="dr.sam")
    review = _review(app, rows.event_id, jo, decision="relabelled", label="bed_exit", note="Mr Jones, bed 2")
    outside = _review(app, rows.event_id, jo, decision="relabelled", label="sleeping")
    foreign = _undo(app, rows.event_id, sam)
    undo = _undo(app, rows.event_id, jo)
    nothing = _undo(app, rows.event_id, jo)
    read = TestClient(app).get(f"/api/v1/events/{rows.event_id}/reviews", headers=sam)
    assert [a.status_code for a in (review, outside, foreign, undo, nothing, read)] == [200, 422, 409, 200, 409, 200]

    entries = {e["request_id"]: e for e in _trail(app, object_type="event", object_id=str(rows.event_id))}
    got = [entries[a.headers["x-request-id"]] for a in (review, outside, foreign, undo, nothing, read)]
    assert [(e["action"], e["outcome"], e["status_code"], e["username"]) for e in got] == [
        ("post_review", "allowed", 200, "nurse.jo"),
        ("post_review", "refused", 422, "nurse.jo"),
        ("post_review_undo", "refused", 409, "dr.sam"),
        ("post_review_undo", "allowed", 200, "nurse.jo"),
        ("post_review_undo", "refused", 409, "nurse.jo"),
        ("read_reviews", "allowed", 200, "dr.sam"),
    ]
    assert got[0]["detail"] == "decision=relabelled label=bed_exit"
    assert "allowed labels: bed_exit" in got[1]["detail"]
    assert got[3]["detail"] == "undid decision; now status=flagged"
    assert "only they can undo" in got[2]["detail"]
    assert "Jones" not in str(got)  # the note (free text) stays out of the trail, as for reviews


def _clips(app: Any, rows: Seeded) -> None:
    """Four one-second clips on the seeded recording; the event (1 s to 3 s) overlaps the second and third."""
    with session_scope(app.state.session_factory) as session:
        recording = session.get(Recording, rows.recording_id)
        assert recording is not None
        recording.path, recording.status = "recordings/seed.mp4", RecordingStatus.scored
        for index in range(4):
            session.add(Clip(recording_id=rows.recording_id, index=index, start=float(index), end=index + 1.0,
                             frame_indices=[index], timestamps=[index + 0.5], model_version_id=rows.model_id,
                             scores={"fall": 0.1}))


def _training_labels(app: Any, rows: Seeded) -> tuple[list[list[float]], int]:
    """(label vectors of the labelled and validation clips, number of unlabelled clips) for a fine-tune now."""
    with session_scope(app.state.session_factory) as session:
        base = session.get(ModelVersion, rows.model_id)
        data = build_finetune_data(session=session, data_dir=app.state.settings.data_dir, base=base,
                                   mode="unsupervised")
    return [list(c.labels or []) for c in data.labelled + data.validation], len(data.unlabelled)


def test_fine_tuning_uses_the_current_review_only(app: Any, rows: Seeded) -> None:
    _clips(app, rows)
    nurse = bearer(app, "clinician")
    fall = [0.0, 1.0, 0.0]  # bed_exit, fall, rhythmic_movement
    _review(app, rows.event_id, nurse, decision="confirmed")
    assert _training_labels(app, rows) == ([fall, fall], 2)

    _undo(app, rows.event_id, nurse)  # an undone confirmation is no longer a positive example
    labelled, unlabelled = _training_labels(app, rows)
    assert labelled == [] and unlabelled == 4
    with session_scope(app.state.session_factory) as session, pytest.raises(NotEnoughDataError):
        build_finetune_data(session=session, data_dir=app.state.settings.data_dir,
                            base=session.get(ModelVersion, rows.model_id), mode="supervised")

    _review(app, rows.event_id, nurse, decision="confirmed")
    _review(app, rows.event_id, nurse, decision="relabelled", label="bed_exit")
    assert _training_labels(app, rows) == ([[1.0, 0.0, 0.0]] * 2, 2)
    _undo(app, rows.event_id, nurse)  # back to the confirmation: a fall again
    assert _training_labels(app, rows) == ([fall, fall], 2)


def test_the_database_refuses_to_rewrite_a_decision(app: Any, rows: Seeded) -> None:
    nurse = bearer(app, "clinician")
    _review(app, rows.event_id, nurse, decision="confirmed", note="seen")
    factory = app.state.session_factory
    with session_scope(factory) as session:
        review_id = session.scalars(select(EventReview.id)).one()
    for change in ({"decision": "rejected"}, {"note": "edited later"}, {"reviewer": "someone-else"},
                   {"undone_by": "x"}):  # undone_by alone, without undone_at, is no undo either
        with pytest.raises(DBAPIError, match="keeps decisions as written"), session_scope(factory) as session:
            session.execute(update(EventReview).where(EventReview.id == review_id).values(**change))
    _undo(app, rows.event_id, nurse)
    with pytest.raises(DBAPIError, match="keeps decisions as written"), session_scope(factory) as session:
        session.execute(update(EventReview).where(EventReview.id == review_id).values(undone_at=utcnow()))
    with pytest.raises(DBAPIError, match="keeps decisions as written"), session_scope(factory) as session:
        session.execute(update(EventReview).where(EventReview.id == review_id).values(undone_at=None))
    with session_scope(factory) as session:
        row = session.get(EventReview, review_id)
        assert row is not None and (row.decision, row.note, row.undone_by) == ("confirmed", "seen", "test-clinician")
        # the history goes with its event (a rescore replaces a recording's events), and only then
        session.execute(text("DELETE FROM event WHERE id = :id"), {"id": rows.event_id})
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(EventReview)) == 0


def test_the_migration_backfills_one_row_per_reviewed_event(db_url: str) -> None:
    upgrade(db_url)
    downgrade(db_url, "0003")  # (the PostgreSQL database comes at head, cloned from the session's template)
    engine = make_engine(db_url)
    reviewed_at = utcnow().replace(microsecond=0)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO app_user (id, username, password_hash, role, active, demo, created_at) "
                              "VALUES (7, 'nurse.jo', 'x', 'clinician', true, false, :at)"), {"at": reviewed_at})
            conn.execute(ModelVersion.__table__.insert().values(
                id=1, name="m", architecture="tiny3d", class_names=["fall", "bed_exit"], input_spec={},
                checkpoint_path="/m.pt", checkpoint_sha256="1" * 64, metrics={}, state="active",
                created_at=reviewed_at))
            conn.execute(Recording.__table__.insert().values(id=1, source="a.mp4", status="scored", warnings=[],
                                                             clip_count=0, created_at=reviewed_at,
                                                             updated_at=reviewed_at))
            common = {"recording_id": 1, "label": "fall", "start": 0.0, "end": 1.0, "peak_score": 0.9,
                      "peak_time": 0.5, "model_version_id": 1, "created_at": reviewed_at, "reviewed_label": None,
                      "note": None, "reviewer": None, "reviewed_at": None}
            # the event table as it is at 0003 (the ORM's has the columns of later revisions, e.g. 0009's source)
            conn.execute(Table("event", MetaData(), autoload_with=conn).insert(), [
                # three events of one model at three starts (migration 0011 makes a model's event unique there)
                {**common, "id": 1, "status": "confirmed", "reviewer": "nurse.jo", "reviewed_at": reviewed_at,
                 "note": "seen"},
                {**common, "id": 2, "start": 10.0, "end": 11.0, "status": "relabelled", "reviewed_label": "bed_exit",
                 "reviewer": "admin-token", "reviewed_at": reviewed_at},
                {**common, "id": 3, "start": 20.0, "end": 21.0, "status": "flagged"},
            ])
        upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(select(EventReview.__table__).order_by(EventReview.id)).mappings().all()
        assert [(r["event_id"], r["decision"], r["label"], r["note"], r["reviewer"], r["reviewer_id"])
                for r in rows] == [(1, "confirmed", None, "seen", "nurse.jo", 7),
                                   (2, "relabelled", "bed_exit", None, "admin-token", None)]
        assert all(r["created_at"] == reviewed_at and r["undone_at"] is None for r in rows)

        downgrade(db_url, "0003")
        assert "event_review" not in inspect(engine).get_table_names()
        with engine.connect() as conn:  # the events keep their latest state
            assert conn.execute(text("SELECT status FROM event ORDER BY id")).scalars().all() == [
                "confirmed", "relabelled", "flagged"]
        upgrade(db_url)  # and up again, the trigger included
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(EventReview.__table__)).scalar() == 2
    finally:
        engine.dispose()
