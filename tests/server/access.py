"""Seed rows for the access tests: one recording with an event, an explanation, media files and a job, written
straight into the database (no scoring needed), plus signed-in browser clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.session import session_scope
from server.db.tables import (
    Event,
    Explanation,
    Job,
    JobStatus,
    ModelState,
    ModelVersion,
    Recording,
    RecordingStatus,
    WebhookDelivery,
    WebhookSubscription,
)
from server.db.webhook_tables import DeliveryStatus, WebhookEventType
from tests.accounts import PASSWORD, ensure_user


@dataclass(frozen=True)
class Seeded:
    recording_id: int
    event_id: int
    explanation_id: int
    job_id: int
    model_id: int
    webhook_id: int
    delivery_id: int


def seed(app: Any) -> Seeded:
    settings = app.state.settings
    media = settings.media_dir / "seed"
    media.mkdir(parents=True, exist_ok=True)
    for name, data in (("key.png", b"\x89PNG\r\n\x1a\nkey"), ("clip.mp4", b"\x00\x00\x00\x18ftypclip"),
                       ("overlay.png", b"\x89PNG\r\n\x1a\noverlay"), ("overlay.mp4", b"\x00\x00\x00\x18ftypov")):
        (media / name).write_bytes(data)
    with session_scope(app.state.session_factory) as session:
        model = session.scalars(select(ModelVersion).where(ModelVersion.state == ModelState.active)).one()
        recording = Recording(source="seed.mp4", patient_ref="p-seed", room="r1", status=RecordingStatus.scored)
        session.add(recording)
        session.flush()
        event = Event(recording_id=recording.id, label="fall", start=1.0, end=3.0, peak_score=0.9, peak_time=2.0,
                      model_version_id=model.id, key_frame_path="media/seed/key.png",
                      clip_path="media/seed/clip.mp4", key_frame_time=2.0)
        session.add(event)
        session.flush()
        explanation = Explanation(event_id=event.id, method="grad_cam", key_frame_time=2.0,
                                  overlay_path="media/seed/overlay.png", video_path="media/seed/overlay.mp4",
                                  agreement=0.5)
        job = Job(kind="score", recording_id=recording.id, status=JobStatus.succeeded)
        # event.created only: the matrix's reviews must not queue deliveries to this (closed) port
        webhook = WebhookSubscription(url="http://127.0.0.1:9/hook", events=["event.created"],
                                      secret_encrypted=settings.secret_box().encrypt("whsec_seed"))
        session.add_all([explanation, job, webhook])
        session.flush()
        delivery = WebhookDelivery(uuid="00000000-0000-4000-8000-000000000001", subscription_id=webhook.id,
                                   event_type=WebhookEventType.event_created, event_id=event.id, data={},
                                   status=DeliveryStatus.delivered, attempts=1, last_status_code=200)
        session.add(delivery)
        session.flush()
        return Seeded(recording.id, event.id, explanation.id, job.id, model.id, webhook.id, delivery.id)


def signed_in(app: Any, role: str, *, username: str | None = None) -> tuple[TestClient, str]:
    """A browser-like client signed in through ``POST /session``; returns (client, CSRF token)."""
    name = ensure_user(app, role, username=username)
    client = TestClient(app)
    answer = client.post("/api/v1/session", json={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return client, answer.json()["csrf_token"]
