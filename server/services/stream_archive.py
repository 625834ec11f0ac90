"""What a live stream's archive must keep for its events, and where their archive media lands on the event.

The retention rule follows the events, not the files: a segment holding any part of an event's review-clip window
(``start - pre`` to ``end + post``) is kept while the event is unreviewed (``flagged``), and while a model event's
review clip has not been cut yet (no clip, no media error: its reader died before the segments closed, or the cut
is queued). Once an event is reviewed and its clip exists, its segments age out like the rest; the clip and the
explanations live on under ``media/events/<id>``. Uploads are never deleted, so this is the only retention rule
for video in Wardwatch (``WARDWATCH_STREAM_ARCHIVE_MAX_HOURS`` / ``_MAX_BYTES``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from server.db.tables import Event, EventSource, EventStatus, Job
from server.services.jobs import LIVE, JobKind


def held_spans(*, session: Session, recording_id: int, pre: float, post: float) -> list[tuple[float, float]]:
    """Recording seconds of ``recording_id``'s archive that its events still need (see the module's rule)."""
    needs = or_(Event.status == EventStatus.flagged,
                and_(Event.source == EventSource.model, Event.clip_path.is_(None), Event.media_error.is_(None)))
    rows = session.execute(select(Event.start, Event.end).where(Event.recording_id == recording_id, needs))
    return [(max(0.0, start - pre), end + post) for start, end in rows]


def events_awaiting_clip(*, session: Session, recording_id: int) -> list[tuple[int, float, float]]:
    """(id, start, end) of the recording's model events with neither a review clip nor a media error: an earlier
    reader stored them but died before their clip could be cut."""
    rows = session.execute(select(Event.id, Event.start, Event.end).where(
        Event.recording_id == recording_id, Event.source == EventSource.model, Event.clip_path.is_(None),
        Event.media_error.is_(None)).order_by(Event.start))
    return [(event_id, start, end) for event_id, start, end in rows]


def attach_clip(*, session: Session, event_id: int, clip_path: str, clip_start: float) -> bool:
    """Store the event's review clip (path relative to the data directory); False if the event is gone."""
    event = session.get(Event, event_id)
    if event is None:
        return False
    event.clip_path, event.clip_start = clip_path, clip_start
    return True


def note_media_error(*, session: Session, event_id: int, error: str) -> bool:
    """Say on the event why part of its media is missing (kept short); False if the event is gone."""
    event = session.get(Event, event_id)
    if event is None:
        return False
    event.media_error = error if not event.media_error else f"{event.media_error}; {error}"
    event.media_error = event.media_error[:2000]
    return True


def live_stream_recordings(*, session: Session, recording_ids: Iterable[int]) -> set[int]:
    """Which of these recordings have a stream job queued or running (their reader prunes their archive)."""
    ids = list(recording_ids)
    if not ids:
        return set()
    rows = session.scalars(select(Job.recording_id).where(Job.kind == JobKind.stream, Job.status.in_(LIVE),
                                                          Job.recording_id.in_(ids)))
    return {int(r) for r in rows if r is not None}
