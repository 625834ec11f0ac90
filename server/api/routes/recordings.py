"""Recordings: upload, list, read."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ingest.errors import IngestError
from ingest.probe import probe
from server.api.deps import DispatcherDep, SessionDep, SessionFactoryDep, SettingsDep
from server.db.session import session_scope
from server.db.tables import Job, Recording, RecordingStatus
from server.schemas import RecordingPublic, RecordingsPublic
from server.services.multipart_stream import MultipartError, StreamedUpload, receive_upload
from server.services.recordings import (
    apply_probe,
    create_recording,
    find_duplicate,
    get_recording,
    list_recordings,
    mark_failed,
)
from server.services.uploads import TruncatedUploadError, UploadTooLargeError, check_complete_mp4
from server.settings import Settings

router = APIRouter(prefix="/recordings", tags=["recordings"])


class RecordingForm(BaseModel):
    """The form fields sent beside the file."""

    model_config = ConfigDict(extra="ignore")

    room: str | None = Field(default=None, max_length=128)
    patient_ref: str | None = Field(default=None, max_length=128, description="pseudonymous ID, never a name")
    started_at: datetime | None = Field(default=None, description="wall-clock start, ISO 8601 with a time zone")
    allow_duplicate: bool = Field(default=False, description="accept content identical to an earlier upload")

    @field_validator("started_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("started_at needs a time zone (e.g. 2026-01-01T08:00:00Z)")
        return value


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "the video (MP4, MKV, MOV, ...)"},
                **RecordingForm.model_json_schema()["properties"],
            },
        }}},
    }
}


class UploadRejected(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


@router.post("", status_code=201, response_model=RecordingPublic, openapi_extra=_UPLOAD_BODY,
             responses={409: {"description": "same content as an earlier recording"},
                        413: {"description": "upload too large"}, 422: {"description": "not a usable video"}})
async def upload_recording(request: Request, settings: SettingsDep, factory: SessionFactoryDep,
                           dispatcher: DispatcherDep) -> RecordingPublic:
    """Upload a recording (multipart: ``file`` plus optional form fields).

    The body is streamed to disk and hashed on the way; past ``WARDWATCH_MAX_UPLOAD_BYTES`` the transfer stops
    with 413. The file is then probed at once: a file that is not a usable video is refused with 422 and kept
    as a ``failed`` recording with its reason; identical content to an earlier recording gets 409. A good
    file is scored in the background: poll ``GET /recordings/{id}``.
    """
    declared = int(request.headers.get("content-length") or 0)
    if declared > settings.max_upload_bytes + 64 * 1024:
        raise HTTPException(413, detail=f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
    staging = settings.data_dir / "incoming" / uuid.uuid4().hex
    try:
        received = await receive_upload(request.headers.get("content-type"), request.stream(), staging,
                                        limit=settings.max_upload_bytes)
    except UploadTooLargeError as exc:
        raise HTTPException(413, detail=str(exc)) from exc
    except MultipartError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    try:
        try:
            form = RecordingForm.model_validate(received.fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        recording, job_id = await run_in_threadpool(_register_upload, settings, factory, received, form)
    except UploadRejected as exc:
        raise HTTPException(exc.status, detail=exc.detail) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if job_id is not None:
        task_id = dispatcher.process_recording(recording.id, job_id)
        await run_in_threadpool(_note_task_id, factory, job_id, task_id)
    return recording


def _register_upload(settings: Settings, factory: sessionmaker[Session], received: StreamedUpload,
                     form: RecordingForm) -> tuple[RecordingPublic, int | None]:
    """Create the recording, move the file into place, check and probe it; commit before anything is queued."""
    assert received.path is not None
    with session_scope(factory) as session:
        recording = create_recording(session=session, source=received.filename or "upload", room=form.room,
                                     patient_ref=form.patient_ref)
        recording.started_at = form.started_at
        relative = f"recordings/{recording.id}/{received.path.name}"
        target = settings.data_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        received.path.replace(target)
        recording.path, recording.size_bytes, recording.sha256 = relative, received.size, received.sha256
        reason, status = _check(session, settings, recording, form)
        if reason is not None:
            if status == 409:
                target.unlink(missing_ok=True)
            mark_failed(recording=recording, reason=reason)
            session.commit()
            raise UploadRejected(status, f"{reason} (recording {recording.id} marked failed)")
        recording.status = RecordingStatus.queued
        job = Job(kind="score", recording_id=recording.id, params={"source": recording.source})
        session.add(job)
        session.flush()
        return RecordingPublic.model_validate(recording), job.id


def _check(session: Session, settings: Settings, recording: Recording,
           form: RecordingForm) -> tuple[str | None, int]:
    """(reason, status) when the upload must be refused, else (None, 0); fills the probe fields."""
    assert recording.sha256 is not None and recording.path is not None
    if not form.allow_duplicate:
        duplicate = find_duplicate(session=session, sha256=recording.sha256, exclude_id=recording.id)
        if duplicate is not None:
            return f"duplicate upload: same content as recording {duplicate.id}", 409
    path = settings.data_dir / recording.path
    try:
        check_complete_mp4(path)
        info = probe(path)
    except (IngestError, TruncatedUploadError) as exc:
        return str(exc), 422
    apply_probe(recording=recording, info=info)
    return None, 0


def _note_task_id(factory: sessionmaker[Session], job_id: int, task_id: str | None) -> None:
    if task_id is None:
        return
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.celery_id = task_id


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
