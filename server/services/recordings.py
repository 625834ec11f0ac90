"""Recording rows: create, read, list, and the status changes the pipeline makes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingest.probe import VideoInfo
from server.db.tables import Recording, RecordingStatus
from server.services.errors import NotFoundError
from server.services.pagination import id_page


def create_recording(*, session: Session, source: str, room: str | None = None,
                     patient_ref: str | None = None) -> Recording:
    """Insert a pending recording."""
    recording = Recording(source=source, room=room, patient_ref=patient_ref, status=RecordingStatus.pending)
    session.add(recording)
    session.flush()
    return recording


def get_recording(*, session: Session, recording_id: int) -> Recording:
    """The recording, or NotFoundError."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFoundError("recording", recording_id)
    return recording


def list_recordings(*, session: Session, limit: int, cursor: int | None = None,
                    status: RecordingStatus | None = None) -> tuple[Sequence[Recording], int, int | None]:
    """Newest first; ``cursor`` is the last id of the previous page. Returns (page, total matching, next
    cursor or None on the last page)."""
    query = select(Recording)
    if status is not None:
        query = query.where(Recording.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page, next_cursor = id_page(session, query, id_column=Recording.id, limit=limit, cursor=cursor)
    return page, total, next_cursor


def find_duplicate(*, session: Session, sha256: str, exclude_id: int) -> Recording | None:
    """An earlier recording with the same content that did not fail (a failed one may be uploaded again)."""
    return session.scalars(
        select(Recording)
        .where(Recording.sha256 == sha256, Recording.id != exclude_id, Recording.status != RecordingStatus.failed)
        .order_by(Recording.id)
    ).first()


def apply_probe(*, recording: Recording, info: VideoInfo) -> None:
    """Copy what probing found onto the recording."""
    recording.fps = info.fps
    recording.width = info.width
    recording.height = info.height
    recording.duration = info.duration
    recording.codec = info.codec
    if recording.started_at is None and info.creation_time is not None:
        recording.started_at = info.creation_time


def mark_failed(*, recording: Recording, reason: str) -> None:
    """A failed recording keeps its reason; nothing else is touched."""
    recording.status = RecordingStatus.failed
    recording.error = reason[:4000]
