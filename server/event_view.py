"""The event as the API shows it: ``EventPublic`` with its media URLs and agreement score. One builder for the
REST answers and the webhook payloads, so a hospital system sees the same shape on either path."""

from __future__ import annotations

from server.db.tables import Event
from server.schemas import EventPublic

API = "/api/v1"


def event_public(event: Event) -> EventPublic:
    """URLs are relative to the server's base URL (what a client called to reach the API)."""
    out = EventPublic.model_validate(event)
    out.key_frame_url = f"{API}/events/{event.id}/keyframe.png" if event.key_frame_path else None
    out.clip_url = f"{API}/events/{event.id}/clip.mp4" if event.clip_path else None
    out.clip_start = event.clip_start if event.clip_path else None  # player time t = recording clip_start + t
    scores = [e.agreement for e in event.explanations if e.agreement is not None]
    out.agreement = scores[0] if scores else None
    out.room = event.recording.room if event.recording is not None else None
    return out
