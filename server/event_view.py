"""The event as the API shows it: ``EventPublic`` with its media URLs, agreement score and room. One builder
for the REST answers (one event, or a queue page read as plain rows) and the webhook payloads, so a hospital
system sees the same shape on either path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement

from server.db.tables import Event, Recording
from server.schemas import EventPublic

API = "/api/v1"

#: what ``EventPublic`` shows is read from these event columns (and the recording's room), nothing else
_SHOWN = ("id", "recording_id", "label", "start", "end", "start_wall", "end_wall", "peak_score", "peak_time",
          "model_version_id", "source", "status", "reviewer", "reviewed_at", "note", "reviewed_label",
          "key_frame_time", "agreement", "media_error", "created_at")
_MEDIA = ("key_frame_path", "clip_path", "clip_start")

#: the columns a queue page selects: a page is built from plain rows, never 50 ORM objects and their relations
#: (table columns, not mapped attributes, so the statement runs as plain SQL without the ORM's result machinery)
PUBLIC_COLUMNS: tuple[ColumnElement[Any], ...] = (
    *(Event.__table__.c[name] for name in (*_SHOWN, *_MEDIA)), Recording.__table__.c.room.label("room"))


def event_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """``EventPublic``'s fields from the values of ``PUBLIC_COLUMNS``. URLs are relative to the server's base URL
    (what a client called to reach the API)."""
    out = {name: row[name] for name in _SHOWN}
    event_id = row["id"]
    out["key_frame_url"] = f"{API}/events/{event_id}/keyframe.png" if row["key_frame_path"] else None
    out["clip_url"] = f"{API}/events/{event_id}/clip.mp4" if row["clip_path"] else None
    out["clip_start"] = row["clip_start"] if row["clip_path"] else None  # player time t = recording clip_start + t
    out["room"] = row["room"]
    return out


def event_public(event: Event) -> EventPublic:
    """One event (a loaded row) as the API shows it."""
    values = {name: getattr(event, name) for name in (*_SHOWN, *_MEDIA)}
    values["room"] = event.recording.room if event.recording is not None else None
    return EventPublic.model_validate(event_fields(values))
