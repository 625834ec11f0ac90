"""Events: the review queue, one event, a clinician's review (its history, undo), explanations and their media."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from server.api.compression import json_answer, json_response
from server.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from server.api.params import CursorQuery, DatetimeQuery, IdPath, IdQuery, OpaqueCursorQuery, TextQuery
from server.api.security import ReadEvents, Review
from server.db.tables import EventSource, EventStatus, Explanation
from server.event_view import event_fields, event_public
from server.schemas import (
    ClinicianEventIn,
    EventMapsPublic,
    EventPublic,
    EventReviewPublic,
    EventReviewsPublic,
    EventsPublic,
    ExplanationPublic,
    ExplanationsPublic,
    ReviewIn,
    UndoIn,
)
from server.services.clinician_events import add_clinician_event, attach_review_clip
from server.services.event_maps import get_event_maps
from server.services.event_queue import EventFilter, QueueSort, list_events
from server.services.events import get_event, get_explanation, review_event, undo_event_review
from server.services.reviews import list_reviews

router = APIRouter(tags=["events"])
API = "/api/v1"


def explanation_public(item: Explanation) -> ExplanationPublic:
    return ExplanationPublic(
        id=item.id, event_id=item.event_id, method=item.method, key_frame_time=item.key_frame_time,
        agreement=item.agreement, overlay_url=f"{API}/explanations/{item.id}/overlay.png",
        video_url=f"{API}/explanations/{item.id}/overlay.mp4" if item.video_path else None,
    )


@router.get("/events", response_model=EventsPublic,
            responses={422: {"description": "bad filter, or a cursor that is malformed or from another query"}})
def read_events(
    session: SessionDep,
    _access: ReadEvents,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: OpaqueCursorQuery = None,
    status: EventStatus | None = None,
    label: TextQuery(64) = None,
    room: TextQuery(128, "the recording's room, exactly") = None,
    recording: IdQuery = None,
    since: DatetimeQuery = None,
    until: DatetimeQuery = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="peak score at least this")] = None,
    source: EventSource | None = None,
    sort: QueueSort = QueueSort.time,
) -> Response:
    """The review queue, filterable, sorted by time (newest wall-clock start first; events without one last)
    or by score (highest first), paginated by an opaque cursor. ``count`` and the per-status ``counts`` come
    with the first page only. A time without a zone is refused (422): whose local time it would be is a guess."""
    filters = EventFilter(status=status, label=label, room=room, recording_id=recording, since=since, until=until,
                          min_score=min_score, source=source)
    page = list_events(session=session, filters=filters, sort=sort, limit=limit, cursor=cursor)
    # validated once, from plain values, and answered as it is (FastAPI would validate the page again)
    return json_response(EventsPublic.model_validate(
        {"data": [event_fields(row._mapping) for row in page.rows], "count": page.count, "counts": page.counts,
         "next_cursor": page.next_cursor}))


@router.get("/events/{event_id}", response_model=EventPublic)
def read_event(session: SessionDep, _access: ReadEvents, event_id: IdPath) -> Response:
    return json_response(event_public(get_event(session=session, event_id=event_id)))  # validated once


@router.post("/events/{event_id}/review", response_model=EventPublic,
             responses={422: {"description": "bad input, or a relabel to a label the event's model does not have"}})
def post_review(session: SessionDep, access: Review, event_id: IdPath, review: ReviewIn) -> Response:
    """Confirm, reject or relabel an event. Each review is added to the event's history
    (``GET .../reviews``); the event shows the latest one. A relabel names one of the classes of the model
    version that flagged the event. The reviewer is the signed-in clinician."""
    # the trail names the decision and label; the note is free text (it may hold patient details), so not
    access.note(detail=f"decision={review.decision}" + (f" label={review.label}" if review.label else ""))
    return json_response(event_public(review_event(session=session, event_id=event_id, review=review,
                                                   reviewer=access.principal)))


@router.post("/events/{event_id}/review/undo", response_model=EventPublic,
             responses={404: {"description": "no such event, or ``review_id`` is not one of its reviews"},
                        409: {"description": "no review to undo, the latest review is someone else's, or the named "
                                             "review is already undone or no longer the latest"}})
def post_review_undo(session: SessionDep, access: Review, event_id: IdPath,
                     undo: Annotated[UndoIn | None, Body()] = None) -> Response:
    """Take back your latest review of the event, if it is still the event's latest: the event returns to
    the review before it (or to flagged). The history keeps the undone review, marked undone.

    Send ``{"review_id": ...}`` (the review you saw as the latest) to make the undo safe to repeat: a second,
    double-clicked or retried undo then gets 409 instead of taking back the review below it."""
    event = undo_event_review(session=session, event_id=event_id, by=access.principal,
                              review_id=undo.review_id if undo is not None else None)
    access.note(detail=f"undid decision; now status={event.status.value}"
                       + (f" label={event.reviewed_label}" if event.reviewed_label else ""))
    return json_response(event_public(event))


@router.get("/events/{event_id}/reviews", response_model=EventReviewsPublic)
def read_reviews(session: SessionDep, _access: ReadEvents, event_id: IdPath,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: CursorQuery = None) -> EventReviewsPublic:
    """The event's review history, newest first, undone reviews included (marked ``undone_at``)."""
    page, total, next_cursor = list_reviews(session=session, event_id=event_id, limit=limit, cursor=cursor)
    return EventReviewsPublic(data=[EventReviewPublic.model_validate(r) for r in page], count=total,
                              next_cursor=next_cursor)


@router.get("/events/{event_id}/explanations", response_model=ExplanationsPublic)
def read_explanations(session: SessionDep, _access: ReadEvents, event_id: IdPath) -> ExplanationsPublic:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM of the event's key frame, with their agreement score."""
    event = get_event(session=session, event_id=event_id)
    items = [explanation_public(e) for e in event.explanations]
    return ExplanationsPublic(data=items, count=len(items))


@router.get("/events/{event_id}/maps", response_model=EventMapsPublic,
            responses={404: {"description": "no such event, or it has no stored maps (a clinician-added event)"}})
def read_event_maps(request: Request, session: SessionDep, settings: SettingsDep, _access: ReadEvents,
                    event_id: IdPath) -> Response:
    """Grad-CAM, Guided Backprop (magnitude) and Guided Grad-CAM of every sampled frame of the event's clips (up
    to 8 around the peak) at low resolution (long side 32), for drawing over the playing review clip: recording
    time is ``clip_start`` + player time. Each method is scaled 0-255 over the event. Gzip-encoded for clients
    that accept it."""
    return json_answer(request, get_event_maps(session=session, data_dir=settings.data_dir, event_id=event_id))


@router.get("/events/{event_id}/keyframe.png", response_class=FileResponse)
def read_key_frame(session: SessionDep, settings: SettingsDep, _access: ReadEvents, event_id: IdPath) -> FileResponse:
    event = get_event(session=session, event_id=event_id)
    return _media(settings.data_dir, event.key_frame_path, "image/png")


@router.get("/events/{event_id}/clip.mp4", response_class=FileResponse)
def read_event_clip(session: SessionDep, settings: SettingsDep, _access: ReadEvents, event_id: IdPath) -> FileResponse:
    """The event with a few seconds before and after, H.264 with faststart (range requests: players seek)."""
    event = get_event(session=session, event_id=event_id)
    return _media(settings.data_dir, event.clip_path, "video/mp4")


MEDIA = {"overlay.png": "image/png", "overlay.mp4": "video/mp4"}
# Any other name is a resource that does not exist (404, as for ``../../etc/passwd``), not a malformed request.
MediaName = Annotated[str, PathParam(json_schema_extra={"enum": list(MEDIA)})]  # never stored nor opened as is


@router.get("/explanations/{explanation_id}/{media}", response_class=FileResponse)
def read_explanation_media(session: SessionDep, settings: SettingsDep, _access: ReadEvents, explanation_id: IdPath,
                           media: MediaName) -> FileResponse:
    """The overlay PNG or the per-frame overlay video (answers range requests, so players can seek)."""
    if media not in MEDIA:
        raise HTTPException(404, detail="media not available")
    item = get_explanation(session=session, explanation_id=explanation_id)
    return _media(settings.data_dir, item.overlay_path if media == "overlay.png" else item.video_path, MEDIA[media])


def _media(data_dir: Path, relative: str | None, media_type: str) -> FileResponse:
    path = (data_dir / relative).resolve() if relative else None
    if path is None or not path.is_file() or data_dir not in path.parents:
        raise HTTPException(404, detail="media not available")
    return FileResponse(path, media_type=media_type)


@router.post("/recordings/{recording_id}/events", status_code=201, response_model=EventPublic, tags=["recordings"],
             responses={404: {"description": "no such recording"},
                        422: {"description": "bad input: a label the recording's model does not have, a range "
                                             "outside the recording or longer than the setting "
                                             "clinician_event_max_seconds (600 s by default), or end not after "
                                             "start"}})
def post_clinician_event(session: SessionDep, factory: SessionFactoryDep, settings: SettingsDep, access: Review,
                         recording_id: IdPath, event_in: ClinicianEventIn) -> EventPublic:
    """Mark an event the model missed: stored with source ``clinician``, confirmed, reviewed by the signed-in
    clinician (its first review-history entry), with a review clip when the recording has a stored file. The
    label is one of the classes of the model version that scored the recording (the active model if none has);
    fine-tuning uses it as a positive example, as it uses a confirmed flag. The range lasts at most
    ``clinician_event_max_seconds``. The event and its audit entry commit first; the clip is exported after,
    outside that transaction (a failed export leaves the event without a clip)."""
    event = add_clinician_event(session=session, settings=settings, recording_id=recording_id, event_in=event_in,
                                reviewer=access.principal)
    # the trail names the new event and its label; the note is free text (it may hold patient details), so not
    access.note(detail=f"added clinician event {event.id} label={event.label}")
    access.record_now(session, 201)
    session.commit()
    if attach_review_clip(factory=factory, settings=settings, event_id=event.id):
        session.refresh(event)  # the clip the short transaction stored
    return event_public(event)
