"""Clinician-added events: a range of a recording marked by a clinician as an event the model missed.

It is stored as an event like the model's (``source`` clinician) so that the queue, the API, webhooks, the
FHIR export and the fine-tune data (``server.training_data``: a confirmed event is a positive for its label)
all treat it as they treat a confirmed flag, with no second path to keep in step:

* its model version is the one that scored the recording (the newest clip's), or the active model if none
  has: the label must be one of that version's classes, the only labels training can learn;
* it is confirmed through the review history (``server.services.reviews.record_review``), so the history
  says who added it, and an undo takes the confirmation back like any other;
* its peak score and time are the model's own view of the range (the highest clip score for the label among
  the clips overlapping it; 0 and the range's middle when none overlaps), so the queue can sort it;
* a review clip is exported from the stored file as the pipeline does (with its exact ``clip_start``), so the
  event view can play and seek it. The export runs after the event is committed (:func:`attach_review_clip`, its
  own short transaction), never while the request holds the database's write lock, and the range is capped
  (``Settings.clinician_event_max_seconds``) so one drag cannot ask for an hour of video. The export failing (a
  damaged file, a range past the decodable end) costs the clip, never the event.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.export import export_review_clip
from server.db.tables import Clip, Event, EventSource, EventStatus, ModelVersion, Recording
from server.media import MAX_OVERLAY_SIDE
from server.schemas import ClinicianEventIn, ReviewIn
from server.security.principal import Principal
from server.services.errors import InvalidInputError
from server.services.models import get_active_model
from server.services.recordings import get_recording
from server.services.reviews import record_review
from server.services.webhook_outbox import WebhookEventType, queue_event_webhooks
from server.settings import Settings

log = logging.getLogger(__name__)


def add_clinician_event(*, session: Session, settings: Settings, recording_id: int, event_in: ClinicianEventIn,
                        reviewer: Principal) -> Event:
    """Store ``event_in`` on the recording as a confirmed, clinician-added event reviewed by ``reviewer``.
    NotFoundError for an unknown recording; InvalidInputError for a label the model lacks, a range longer than
    ``settings.clinician_event_max_seconds``, a range past the recording's end, or a recording with no model to
    name. No review clip yet: the caller commits, then calls :func:`attach_review_clip`."""
    recording = get_recording(session=session, recording_id=recording_id)
    cap = settings.clinician_event_max_seconds
    if event_in.end - event_in.start > cap:
        raise InvalidInputError(f"the range {event_in.start:g}-{event_in.end:g} s is "
                                f"{event_in.end - event_in.start:g} s long; a marked event may last at most {cap:g} s "
                                "(mark a longer episode as several events)")
    version = scoring_version(session=session, recording_id=recording.id)
    labels = [str(name) for name in version.class_names]
    if event_in.label not in labels:
        raise InvalidInputError(f"label {event_in.label!r} is not a class of model version {version.id}, which "
                                f"scores recording {recording.id}; allowed labels: {', '.join(labels)}")
    duration = known_duration(session=session, recording=recording)
    if event_in.end > duration:
        raise InvalidInputError(f"the range {event_in.start:g}-{event_in.end:g} s ends after recording "
                                f"{recording.id}, which is {duration:g} s long")
    peak_score, peak_time = peak_over(session=session, recording_id=recording.id, version_id=version.id,
                                      label=event_in.label, start=event_in.start, end=event_in.end)
    started = recording.started_at
    event = Event(
        recording_id=recording.id, label=event_in.label, start=event_in.start, end=event_in.end,
        start_wall=started + timedelta(seconds=event_in.start) if started else None,
        end_wall=started + timedelta(seconds=event_in.end) if started else None,
        peak_score=peak_score, peak_time=peak_time, model_version_id=version.id, source=EventSource.clinician,
        status=EventStatus.flagged,
    )
    session.add(event)
    session.flush()
    event = record_review(session=session, event_id=event.id,
                          review=ReviewIn(decision="confirmed", note=event_in.note), reviewer=reviewer)
    queue_event_webhooks(session=session, event=event, event_type=WebhookEventType.event_created)
    return event


def scoring_version(*, session: Session, recording_id: int) -> ModelVersion:
    """The model version of the recording's newest clip, else the active one. InvalidInputError if neither."""
    version_id = session.scalar(select(Clip.model_version_id).where(Clip.recording_id == recording_id)
                                .order_by(Clip.id.desc()).limit(1))
    version = session.get(ModelVersion, version_id) if version_id is not None else get_active_model(session=session)
    if version is None:
        raise InvalidInputError("no model version scored this recording and none is active: its classes are the "
                                "labels an event may have")
    return version


def known_duration(*, session: Session, recording: Recording) -> float:
    """The recording's duration, or, while a live stream runs (no duration yet), the end of its last clip."""
    if recording.duration is not None:
        return recording.duration
    last = session.scalar(select(func.max(Clip.end)).where(Clip.recording_id == recording.id))
    if last is None:
        raise InvalidInputError(f"recording {recording.id} has no known duration yet (not probed or scored): "
                                "mark events once it has been read")
    return float(last)


def peak_over(*, session: Session, recording_id: int, version_id: int, label: str, start: float,
              end: float) -> tuple[float, float]:
    """(highest score for ``label``, midpoint of that clip) over the clips of the version overlapping
    ``[start, end]``; (0, middle of the range) when none overlaps."""
    best: tuple[float, float] = (0.0, (start + end) / 2.0)
    clips = session.execute(select(Clip.start, Clip.end, Clip.scores).where(
        Clip.recording_id == recording_id, Clip.model_version_id == version_id, Clip.start < end, Clip.end > start))
    for clip_start, clip_end, scores in clips:
        score = float((scores or {}).get(label, 0.0))
        if score > best[0]:
            best = (score, (clip_start + clip_end) / 2.0)
    return best


def attach_review_clip(*, factory: sessionmaker[Session], settings: Settings, event_id: int) -> bool:
    """Export the committed event's review clip and store ``clip_path`` and ``clip_start`` in a short transaction
    of its own; False if the event was deleted meanwhile. Nothing is held open while
    ffmpeg decodes: reading the event and writing the result are two separate short transactions."""
    with factory() as session:
        event = session.get(Event, event_id)
        if event is None:
            return False
        recording = session.get(Recording, event.recording_id)
        path = recording.path if recording is not None else None
        start, end = event.start, event.end
        session.rollback()  # end the read before the export
        if not path:
            return True
        exported = review_clip(settings=settings, video=settings.data_dir / path, event_id=event_id, start=start,
                               end=end)
        if exported is None:
            return True
        event = session.get(Event, event_id)
        if event is None:
            return False
        event.clip_path, event.clip_start = exported
        session.commit()
        return True


def review_clip(*, settings: Settings, video: Path, event_id: int, start: float,
                end: float) -> tuple[str, float] | None:
    """Export the event's review clip as the pipeline does: (path relative to the data directory, recording
    second at the clip's 0 s), or None (logged) when the file cannot give one."""
    out = settings.media_dir / "events" / str(event_id) / "clip.mp4"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = export_review_clip(video, out, start, end, pre=settings.review_clip_pre_seconds,
                                     post=settings.review_clip_post_seconds, max_side=MAX_OVERLAY_SIDE)
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the event must not be lost
        log.warning("event %s: no review clip from %s (%s: %s); the event is kept without one", event_id, video,
                    type(exc).__name__, exc)
        return None
    return str(written.path.relative_to(settings.data_dir)), written.start
