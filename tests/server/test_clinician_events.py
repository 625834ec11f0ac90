"""Clinician-added events (``POST /recordings/{id}/events``): stored confirmed with source ``clinician``, the
clinician as reviewer and a review-history row, the model's peak score over the range, audited, sent to
webhook subscribers, in the queue and in the FHIR export; every refusal a clear 4xx that stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select

from server.db.access_tables import AuditLog, Outcome
from server.db.session import session_scope
from server.db.tables import Clip, Event, ModelState, ModelVersion, Recording, RecordingStatus
from server.db.webhook_tables import WebhookDelivery, WebhookEventType, WebhookSubscription
from tests.accounts import bearer

START = datetime(2026, 5, 4, 22, 0, tzinfo=UTC)
DURATION = 30.0


def _seed(app: Any, *, duration: float | None = DURATION, path: str | None = None) -> tuple[int, int, list[str]]:
    """A scored recording of 30 s whose clips (2 s each, to 20 s) score ``fall`` at index / 20; returns
    (recording id, model id, class names). A subscriber to ``event.created`` is there too (a closed port)."""
    with session_scope(app.state.session_factory) as session:
        model = session.scalars(select(ModelVersion).where(ModelVersion.state == ModelState.active)).one()
        recording = Recording(source="night.mp4", room="room-7", patient_ref="p-7", started_at=START,
                              duration=duration, path=path, status=RecordingStatus.scored)
        session.add(recording)
        session.flush()
        names = [str(n) for n in model.class_names]
        session.add_all(Clip(recording_id=recording.id, index=i, start=2.0 * i, end=2.0 * i + 2, frame_indices=[],
                             timestamps=[], scores={n: (i / 20 if n == "fall" else 0.01) for n in names},
                             model_version_id=model.id) for i in range(10))
        if not session.scalar(select(func.count()).select_from(WebhookSubscription)):
            session.add(WebhookSubscription(url="http://127.0.0.1:9/hook", events=["event.created"],
                                            secret_encrypted=app.state.settings.secret_box().encrypt("whsec_t")))
        return recording.id, model.id, names


def _events(client: TestClient) -> int:
    with session_scope(client.app.state.session_factory) as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def test_a_marked_event_is_stored_confirmed_and_shows_everywhere(client: TestClient) -> None:
    recording_id, model_id, _names = _seed(client.app)
    answer = client.post(f"/api/v1/recordings/{recording_id}/events",
                         json={"label": "fall", "start": 5.0, "end": 9.0, "note": "missed fall by the window"})
    assert answer.status_code == 201, answer.text
    event = answer.json()
    assert {k: event[k] for k in ("recording_id", "label", "start", "end", "source", "status", "reviewer",
                                  "note", "model_version_id", "room", "clip_url", "reviewed_label")} == {
        "recording_id": recording_id, "label": "fall", "start": 5.0, "end": 9.0, "source": "clinician",
        "status": "confirmed", "reviewer": "test-clinician", "note": "missed fall by the window",
        "model_version_id": model_id, "room": "room-7", "clip_url": None, "reviewed_label": None}
    # the clips overlapping 5-9 s are [4,6], [6,8], [8,10]: the best scores fall at 4/20, at its midpoint 9 s
    assert event["peak_score"] == pytest.approx(0.2) and event["peak_time"] == pytest.approx(9.0)
    assert datetime.fromisoformat(event["start_wall"]) == START + timedelta(seconds=5)
    assert datetime.fromisoformat(event["end_wall"]) == START + timedelta(seconds=9)

    history = client.get(f"/api/v1/events/{event['id']}/reviews").json()
    assert [(r["decision"], r["reviewer"], r["note"], r["undone_at"]) for r in history["data"]] == [
        ("confirmed", "test-clinician", "missed fall by the window", None)]
    queue = client.get("/api/v1/events", params={"source": "clinician"}).json()
    assert [e["id"] for e in queue["data"]] == [event["id"]] and queue["counts"]["confirmed"] == 1
    assert client.get("/api/v1/events", params={"source": "model", "recording": recording_id}).json()["count"] == 0
    assert client.get(f"/api/v1/events/{event['id']}").json() == event

    with session_scope(client.app.state.session_factory) as session:
        entry = session.scalars(select(AuditLog).where(AuditLog.action == "post_clinician_event")).one()
        assert (entry.outcome, entry.object_type, entry.object_id, entry.username, entry.status_code) == (
            Outcome.allowed, "recording", str(recording_id), "test-clinician", 201)
        assert entry.detail == f"added clinician event {event['id']} label=fall"  # never the free-text note
        delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == event["id"])).one()
        assert delivery.event_type == WebhookEventType.event_created
        assert delivery.data["source"] == "clinician" and delivery.data["status"] == "confirmed"

    # a range no clip reaches: the model saw nothing there (score 0), the peak is the range's middle
    late = client.post(f"/api/v1/recordings/{recording_id}/events", json={"label": "fall", "start": 24, "end": 30})
    assert late.status_code == 201, late.text
    assert late.json()["peak_score"] == 0.0 and late.json()["peak_time"] == 27.0 and late.json()["note"] is None


def test_a_marked_event_is_exported_to_fhir_as_a_clinicians_finding(client: TestClient) -> None:
    recording_id, _model_id, _names = _seed(client.app)
    event = client.post(f"/api/v1/recordings/{recording_id}/events",
                        json={"label": "fall", "start": 5.0, "end": 9.0}).json()
    answer = client.get("/api/v1/fhir/Bundle")
    assert answer.status_code == 200, answer.text
    bundle = Bundle.model_validate(answer.json())
    observations = [e.resource for e in bundle.entry or [] if e.resource.get_resource_type() == "Observation"]
    assert [o.id for o in observations] == [f"event-{event['id']}"]
    observation = observations[0]
    assert observation.status == "final" and observation.code.coding[0].code == "fall"
    assert observation.method.coding[0].code == "clinician"
    assert observation.device is None  # no model observed it
    assert observation.performer[0].display == "test-clinician"
    components = {c.code.coding[0].code: c for c in observation.component}
    assert "model-label" not in components
    assert float(components["model-score"].valueQuantity.value) == pytest.approx(0.2)
    assert not [e for e in bundle.entry or [] if e.resource.get_resource_type() == "Device"]


def test_refusals_store_nothing(client: TestClient) -> None:
    recording_id, _model_id, names = _seed(client.app)
    url = f"/api/v1/recordings/{recording_id}/events"
    before = _events(client)
    cases: list[tuple[str, dict[str, Any], dict[str, str] | None, int, str]] = [
        ("/api/v1/recordings/9999/events", {"label": "fall", "start": 1, "end": 2}, None, 404, "recording 9999"),
        (url, {"label": "dancing", "start": 1, "end": 2}, None, 422, "allowed labels: " + ", ".join(names)),
        (url, {"label": "fall", "start": 25, "end": 31}, None, 422, "30 s long"),
        (url, {"label": "fall", "start": -1, "end": 2}, None, 422, "greater than or equal to 0"),
        (url, {"label": "fall", "start": 4, "end": 4}, None, 422, "'end' must be after 'start'"),
        (url, {"label": "fall", "start": 5, "end": 4}, None, 422, "'end' must be after 'start'"),
        (url, {"label": "fall", "start": 1, "end": 2, "status": "flagged"}, None, 422, "status"),
        (url, {"label": "fall", "start": 1, "end": 2, "note": "  "}, None, 422, "the note is empty"),
        (url, {"label": "", "start": 1, "end": 2}, None, 422, "label"),
        (url, {"start": 1, "end": 2}, None, 422, "label"),
        (url, {"label": "fall", "start": 1, "end": 2}, bearer(client.app, "auditor"), 403, "auditor role"),
        (url, {"label": "fall", "start": 1, "end": 2}, bearer(client.app, "admin"), 403, "admin role"),
        (url, {"label": "fall", "start": 1, "end": 2}, bearer(client.app, "clinician", scopes=["read:events"]),
         403, "lacks the scope"),
        (url, {"label": "fall", "start": 1, "end": 2}, {"Authorization": "Bearer ww_not-a-token"}, 401, ""),
    ]
    for target, body, headers, status, words in cases:
        answer = client.post(target, json=body, headers=headers)
        assert answer.status_code == status, (body, headers, answer.text)
        assert words in str(answer.json()["detail"]), (body, answer.text)
    anonymous = TestClient(client.app)
    assert anonymous.post(url, json={"label": "fall", "start": 1, "end": 2}).status_code == 401
    assert client.post(url, content=b'{"label": "fall", "start": NaN, "end": 2}',
                       headers={"Content-Type": "application/json"}).status_code == 422

    unprobed, _, _ = _seed(client.app, duration=None)  # a live stream still running: its last clip's end counts
    assert client.post(f"/api/v1/recordings/{unprobed}/events",
                       json={"label": "fall", "start": 19, "end": 21}).status_code == 422
    assert _events(client) == before
    assert client.post(f"/api/v1/recordings/{unprobed}/events",
                       json={"label": "fall", "start": 18, "end": 20}).status_code == 201
    with session_scope(client.app.state.session_factory) as session:
        refused = session.scalars(select(AuditLog).where(AuditLog.action == "post_clinician_event",
                                                         AuditLog.outcome == Outcome.refused)).all()
        assert {r.status_code for r in refused} >= {401, 403, 404, 422}


def test_a_file_that_gives_no_clip_keeps_the_event(client: TestClient) -> None:
    settings = client.app.state.settings
    junk = settings.data_dir / "recordings" / "junk.mp4"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"not a video at all")
    recording_id, _model_id, _names = _seed(client.app, path=str(junk.relative_to(settings.data_dir)))
    answer = client.post(f"/api/v1/recordings/{recording_id}/events", json={"label": "fall", "start": 2, "end": 6})
    assert answer.status_code == 201, answer.text
    assert answer.json()["clip_url"] is None and answer.json()["status"] == "confirmed"
    assert client.get(f"/api/v1/events/{answer.json()['id']}/clip.mp4").status_code == 404


def test_a_range_longer_than_the_cap_is_refused_with_the_limit(client: TestClient) -> None:
    recording_id, _model_id, _names = _seed(client.app, duration=4000.0)
    before = _events(client)
    cap = client.app.state.settings.clinician_event_max_seconds
    answer = client.post(f"/api/v1/recordings/{recording_id}/events",
                         json={"label": "fall", "start": 10, "end": 10 + cap + 1})
    assert answer.status_code == 422, answer.text
    assert f"at most {cap:g} s" in answer.text and "several events" in answer.text
    assert _events(client) == before
    assert client.post(f"/api/v1/recordings/{recording_id}/events",
                       json={"label": "fall", "start": 10, "end": 10 + cap}).status_code == 201


def test_the_clip_is_exported_after_the_event_is_committed(client: TestClient, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """While ffmpeg works, the event (and its audit entry) is already committed, and another writer is not
    blocked by the request: the export holds no transaction."""
    import server.services.clinician_events as clinician_events

    settings = client.app.state.settings
    junk = settings.data_dir / "recordings" / "later.mp4"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"not a video either")
    recording_id, _model_id, _names = _seed(client.app, path=str(junk.relative_to(settings.data_dir)))
    seen: list[tuple[str, str | None]] = []
    real = clinician_events.export_review_clip

    def watching(src, dst, start, end, **kwargs):  # type: ignore[no-untyped-def]
        event_id = int(dst.parent.name)
        with session_scope(client.app.state.session_factory) as other:  # a second connection writes meanwhile
            event = other.get(Event, event_id)
            assert event is not None, "the event is not committed while its clip is exported"
            seen.append((event.status.value, event.reviewer))
            other.get(Recording, recording_id).room = "room-7b"
        return real(src, dst, start, end, **kwargs)

    monkeypatch.setattr(clinician_events, "export_review_clip", watching)
    answer = client.post(f"/api/v1/recordings/{recording_id}/events", json={"label": "fall", "start": 2, "end": 6})
    assert answer.status_code == 201, answer.text
    assert seen == [("confirmed", answer.json()["reviewer"])]
    assert answer.json()["clip_url"] is None and answer.json()["clip_start"] is None  # the export failed: kept
    with session_scope(client.app.state.session_factory) as session:
        assert session.get(Recording, recording_id).room == "room-7b"
        assert session.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.action == "post_clinician_event", AuditLog.outcome == Outcome.allowed,
            AuditLog.detail.contains(f"event {answer.json()['id']} "))) == 1
