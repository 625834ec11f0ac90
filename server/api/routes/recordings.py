"""Recordings: upload, list, read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile

from ingest.errors import IngestError
from ingest.probe import probe
from server.api.deps import DispatcherDep, SessionDep, SettingsDep
from server.db.tables import Job, Recording, RecordingStatus
from server.schemas import RecordingPublic, RecordingsPublic
from server.services.recordings import (
    apply_probe,
    create_recording,
    find_duplicate,
    get_recording,
    list_recordings,
    mark_failed,
)
from server.services.uploads import (
    TruncatedUploadError,
    UploadTooLargeError,
    check_complete_mp4,
    safe_filename,
    store_stream,
)

router = APIRouter(prefix="/recordings", tags=["recordings"])


@router.post("", status_code=201, response_model=RecordingPublic,
             responses={409: {"description": "same content as an earlier recording"},
                        413: {"description": "upload too large"}, 422: {"description": "not a usable video"}})
def upload_recording(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    file: Annotated[UploadFile, File(description="the video file (MP4, MKV, AVI, MOV, ...)")],
    room: Annotated[str | None, Form(max_length=128)] = None,
    patient_ref: Annotated[str | None, Form(max_length=128, description="pseudonymous ID, never a name")] = None,
    started_at: Annotated[datetime | None, Form(description="wall-clock start (ISO 8601, with zone)")] = None,
    allow_duplicate: Annotated[bool, Form(description="accept content identical to an earlier upload")] = False,
) -> Recording:
    """Upload a recording. It is probed at once (a bad file is refused with 422 and kept as a failed recording
    with its reason), then scored in the background; poll ``GET /recordings/{id}`` for its status."""
    if started_at is not None and started_at.tzinfo is None:
        raise HTTPException(422, detail="started_at needs a time zone (e.g. 2026-01-01T08:00:00Z)")
    declared = int(request.headers.get("content-length") or 0)
    if declared > settings.max_upload_bytes + 64 * 1024:
        raise HTTPException(413, detail=f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
    recording = create_recording(session=session, source=file.filename or "upload", room=room,
                                 patient_ref=patient_ref)
    recording.started_at = started_at
    relative = f"recordings/{recording.id}/{safe_filename(file.filename)}"
    try:
        size, sha256 = store_stream(file.file, settings.data_dir / relative, limit=settings.max_upload_bytes,
                                    chunk=settings.upload_chunk_bytes)
    except UploadTooLargeError as exc:
        _fail(session, recording, str(exc), status=413)
    recording.path, recording.size_bytes, recording.sha256 = relative, size, sha256
    duplicate = None if allow_duplicate else find_duplicate(session=session, sha256=sha256, exclude_id=recording.id)
    if duplicate is not None:
        (settings.data_dir / relative).unlink(missing_ok=True)
        _fail(session, recording, f"duplicate upload: same content as recording {duplicate.id}", status=409)
    try:
        check_complete_mp4(settings.data_dir / relative)
        info = probe(settings.data_dir / relative)
    except (IngestError, TruncatedUploadError) as exc:
        _fail(session, recording, str(exc), status=422)
    apply_probe(recording=recording, info=info)
    recording.status = RecordingStatus.queued
    job = Job(kind="score", recording_id=recording.id, params={"source": recording.source})
    session.add(job)
    session.commit()  # enqueue only after the rows are committed (the worker reads them)
    job.celery_id = dispatcher.process_recording(recording.id, job.id)
    return recording


def _fail(session: SessionDep, recording: Recording, reason: str, *, status: int) -> None:
    """Keep the failed recording with its reason, then answer with a 4xx."""
    mark_failed(recording=recording, reason=reason)
    session.commit()
    raise HTTPException(status, detail=f"{reason} (recording {recording.id} marked failed)")


@router.get("", response_model=RecordingsPublic)
def read_recordings(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[int | None, Query(description="last id of the previous page")] = None,
    status: RecordingStatus | None = None,
) -> RecordingsPublic:
    """Recordings, newest first, paginated by cursor."""
    page, total = list_recordings(session=session, limit=limit, cursor=cursor, status=status)
    next_cursor = page[-1].id if len(page) == limit else None
    return RecordingsPublic(data=[RecordingPublic.model_validate(r) for r in page], count=total,
                            next_cursor=next_cursor)


@router.get("/{recording_id}", response_model=RecordingPublic)
def read_recording(session: SessionDep, recording_id: int) -> Recording:
    """One recording with its status and, if it failed, the reason."""
    return get_recording(session=session, recording_id=recording_id)
