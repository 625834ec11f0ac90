"""Recordings: upload, list, read."""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ingest.errors import IngestError
from ingest.paths import UnsafePathError, resolve_import_path
from server.api.body_limits import STREAMED
from server.api.deps import DispatcherDep, SessionDep, SessionFactoryDep, SettingsDep
from server.api.params import CursorQuery, IdPath
from server.api.security import Access, ReadEvents, WriteRecordings, WriteRecordingsUpload
from server.db.session import session_scope
from server.db.tables import Recording, RecordingStatus
from server.schemas import RecordingForm, RecordingPublic, RecordingSource, RecordingsPublic, TimelinePublic
from server.services.errors import CapacityError
from server.services.intake import IntakeOptions, RecordingRejected, file_sha256, queue_scoring, register_recording
from server.services.jobs import note_task_id
from server.services.multipart_stream import MultipartError, receive_upload
from server.services.recordings import get_recording, list_recordings
from server.services.streams import StreamRequest, start_stream
from server.services.streams import stop_stream as request_stop
from server.services.timeline import recording_timeline
from server.services.upload_staging import new_staging_dir
from server.services.uploads import UploadTooLargeError
from server.settings import Settings
from server.worker.dispatch import Dispatcher

router = APIRouter(prefix="/recordings", tags=["recordings"])
JSON_SOURCE_MAX_BYTES = 64 * 1024


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "the video (MP4, MKV, MOV, ...)"},
                    **RecordingForm.model_json_schema()["properties"],
                },
            }},
            "application/json": {"schema": RecordingSource.model_json_schema()},
        },
    }
}


@router.post("", status_code=201, response_model=RecordingPublic, openapi_extra=_UPLOAD_BODY, max_body_size=STREAMED,
             responses={403: {"description": "server-side import is disabled (JSON 'path')"},
                        409: {"description": "same content as an earlier recording"},
                        413: {"description": "upload too large"}, 422: {"description": "not a usable video"}})
async def upload_recording(request: Request, settings: SettingsDep, factory: SessionFactoryDep,
                           dispatcher: DispatcherDep, access: WriteRecordingsUpload) -> RecordingPublic:
    """Upload a recording (multipart: ``file`` plus optional form fields).

    The body is streamed to disk and hashed on the way; past ``WARDWATCH_MAX_UPLOAD_BYTES`` the transfer stops
    with 413, and a body that stalls for ``WARDWATCH_BODY_IDLE_TIMEOUT_SECONDS`` gets 408 (nothing is kept of
    either). The file is then probed at once: a file that is not a usable video is refused with 422 and kept
    as a ``failed`` recording with its reason (the file itself goes to the bounded quarantine folder);
    identical content to an earlier recording gets 409. A good file is scored in the background: poll
    ``GET /recordings/{id}``.
    """
    if (request.headers.get("content-type") or "").split(";")[0].strip() == "application/json":
        return await _from_json(request, settings, factory, dispatcher, access)
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit():  # uvicorn's parser refuses it first; another ASGI server may not
        raise HTTPException(400, detail="Content-Length is not a number")
    if int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise HTTPException(413, detail=f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
    staging = new_staging_dir(settings)  # named after this process: a restart cleans it if we die mid-upload
    try:
        try:
            received = await receive_upload(request.headers.get("content-type"), request.stream(), staging,
                                            limit=settings.max_upload_bytes)
        except UploadTooLargeError as exc:
            raise HTTPException(413, detail=str(exc)) from exc
        except MultipartError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        except ClientDisconnect as exc:  # nobody reads the answer; the refusal is audited like any other
            raise HTTPException(400, detail="the client disconnected during the upload") from exc
        try:
            form = RecordingForm.model_validate(received.fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        assert received.path is not None
        options = IntakeOptions(room=form.room, patient_ref=form.patient_ref, started_at=form.started_at,
                                allow_duplicate=form.allow_duplicate)
        recording, job_id = await run_in_threadpool(
            lambda: register_recording(settings=settings, factory=factory, source=received.filename or "upload",
                                       file=received.path, sha256=received.sha256, size=received.size,
                                       options=options, move_into_data_dir=True,
                                       audit=access.entry(detail="upload")))
    except RecordingRejected as exc:
        access.refusal_recorded = True  # in the transaction that kept the failed recording
        raise HTTPException(exc.status, detail=exc.detail) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # whatever went wrong, no partial file stays behind
    await run_in_threadpool(queue_scoring, dispatcher, factory, recording.id, job_id)
    return recording


async def _from_json(request: Request, settings: Settings, factory: sessionmaker[Session],
                     dispatcher: Dispatcher, access: Access) -> RecordingPublic:
    """Server-side import: the file stays in the import directory; nothing outside it is ever opened."""
    body = bytearray()
    async for chunk in request.stream():  # not request.body(): this route's size limit is its own (STREAMED)
        body += chunk
        if len(body) > JSON_SOURCE_MAX_BYTES:
            raise HTTPException(413, detail="JSON body larger than 64 KiB")
    try:
        source = RecordingSource.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    if source.url is not None:
        return await run_in_threadpool(_start_stream, source, settings, factory, dispatcher, access)
    assert source.path is not None
    if settings.import_dir is None:
        raise HTTPException(403, detail="server-side import is disabled: set WARDWATCH_IMPORT_DIR")
    try:
        path = resolve_import_path(settings.import_dir, source.path)
    except UnsafePathError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    options = IntakeOptions(room=source.room, patient_ref=source.patient_ref, started_at=source.started_at,
                            allow_duplicate=source.allow_duplicate)

    def register() -> tuple[RecordingPublic, int]:
        return register_recording(settings=settings, factory=factory, source=source.path, file=path,
                                  sha256=file_sha256(path), size=path.stat().st_size, options=options,
                                  move_into_data_dir=False, audit=access.entry(detail="import"))

    try:
        recording, job_id = await run_in_threadpool(register)
    except RecordingRejected as exc:
        access.refusal_recorded = True
        raise HTTPException(exc.status, detail=exc.detail) from exc
    await run_in_threadpool(queue_scoring, dispatcher, factory, recording.id, job_id)
    return recording


def _start_stream(source: RecordingSource, settings: Settings, factory: sessionmaker[Session],
                  dispatcher: Dispatcher, access: Access) -> RecordingPublic:
    """A live stream: the destination is checked before anything is stored or connected to (422 naming the rule),
    ``max_streams`` bounds how many run (429); the URL is stored encrypted and shown redacted."""
    assert source.url is not None
    request = StreamRequest(url=source.url, room=source.room, patient_ref=source.patient_ref,
                            started_at=source.started_at)
    try:
        public, job_id = start_stream(settings=settings, factory=factory, request=request,
                                      audit=access.entry(detail="stream"))
    except IngestError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    except CapacityError as exc:
        raise HTTPException(429, detail=str(exc), headers={"Retry-After": "60"}) from exc
    task_id = dispatcher.stream(public.id, job_id)
    if task_id is not None:
        with session_scope(factory) as session:
            note_task_id(session=session, job_id=job_id, task_id=task_id)
    return public


@router.post("/{recording_id}/stop", response_model=RecordingPublic,
             responses={409: {"description": "not a running live stream"}})
def stop_stream(session: SessionDep, _access: WriteRecordings, recording_id: IdPath) -> Recording:
    """Stop a live stream: clips already committed and events found so far are kept."""
    return request_stop(session=session, recording_id=recording_id)


@router.get("", response_model=RecordingsPublic)
def read_recordings(
    session: SessionDep,
    _access: ReadEvents,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: CursorQuery = None,
    status: RecordingStatus | None = None,
) -> RecordingsPublic:
    """Recordings, newest first, paginated by cursor."""
    page, total, next_cursor = list_recordings(session=session, limit=limit, cursor=cursor, status=status)
    return RecordingsPublic(data=[RecordingPublic.model_validate(r) for r in page], count=total,
                            next_cursor=next_cursor)


@router.get("/{recording_id}", response_model=RecordingPublic)
def read_recording(session: SessionDep, _access: ReadEvents, recording_id: IdPath) -> Recording:
    """One recording with its status and, if it failed, the reason."""
    return get_recording(session=session, recording_id=recording_id)


MAX_TIMELINE_POINTS = 5000


@router.get("/{recording_id}/timeline", response_model=TimelinePublic,
            responses={422: {"description": "bad range: start < 0, end <= start, start past the end, or points out of "
                                            "1..5000"}})
def read_timeline(
    session: SessionDep,
    _access: ReadEvents,
    recording_id: IdPath,
    start: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="seconds; default 0")] = None,
    end: Annotated[float | None, Query(gt=0, allow_inf_nan=False,
                                       description="seconds; default (and at most) the recording's end")] = None,
    points: Annotated[int, Query(ge=1, le=MAX_TIMELINE_POINTS, description="number of buckets")] = 600,
) -> TimelinePublic:
    """Each class's clip score over ``[start, end]`` in ``points`` equal buckets (the highest score of the clips
    overlapping a bucket; null where none does), the events overlapping the range and a live stream's gaps."""
    return recording_timeline(session=session, recording_id=recording_id, start=start, end=end, points=points)
