"""Live stream sources: admitting a stream (destination, capacity), keeping its URL encrypted at rest, reading it
back for the worker, and stopping it. (A stream a restart cut off is resumed: ``server.services.job_recovery``.)

Why the URL is encrypted and not only redacted: the worker must open it, credentials and all, so the job row
keeps it, but as ``settings.secret_box()`` ciphertext; a database dump or backup then holds no camera password.
Everything shown (the recording's ``source``, the job's ``params.source``, messages, logs) is the redacted form.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ingest.stream import redact_url
from server.db.session import session_scope
from server.db.tables import AuditLog, Job, Recording, RecordingStatus
from server.schemas import RecordingPublic
from server.security.secret_box import SecretBox
from server.services.audit import record
from server.services.errors import CapacityError, ConflictError
from server.services.jobs import LIVE, JobKind, cancel_job, create_job, live_job_for
from server.services.recordings import create_recording, get_recording
from server.settings import Settings

STREAM_KIND = JobKind.stream
# One process admits one stream at a time (count, then insert); PostgreSQL also serialises API processes with a
# transaction-scoped advisory lock under this key (an arbitrary constant: "WWSTREAM" in ASCII, trimmed).
_ADMISSION = threading.Lock()
_ADVISORY_KEY = 0x5757535452454D


@dataclass(frozen=True)
class StreamRequest:
    url: str
    room: str | None = None
    patient_ref: str | None = None
    started_at: datetime | None = None


def check_destination(*, settings: Settings, url: str) -> None:
    """Refuse a URL the destination policy refuses (scheme, loopback, metadata, outside the allow-list), before
    anything is stored or connected to. Raises the ingest errors (``InvalidVideoError`` and its
    ``DestinationRefused``, ``DestinationUnresolved``), whose messages never carry credentials."""
    settings.stream_destinations().check(url)


def count_live_streams(*, session: Session) -> int:
    """Stream jobs queued or running: what the ``max_streams`` bound counts."""
    query = select(func.count()).select_from(Job).where(Job.kind == STREAM_KIND, Job.status.in_(LIVE))
    return session.scalar(query) or 0


def start_stream(*, settings: Settings, factory: sessionmaker[Session], request: StreamRequest,
                 audit: AuditLog) -> tuple[RecordingPublic, int]:
    """Check the destination, admit the stream under ``max_streams``, then create its recording and job (the URL
    encrypted) with the audit entry in one transaction; returns (recording, job id). Raises the ingest errors
    of :func:`check_destination` or :class:`CapacityError`."""
    check_destination(settings=settings, url=request.url)  # DNS before any transaction is open
    stored = settings.secret_box().encrypt(request.url)
    shown = redact_url(request.url)
    with _ADMISSION, session_scope(factory) as session:
        _serialise_admission(session)
        live = count_live_streams(session=session)
        if live >= settings.max_streams:
            raise CapacityError(f"{live} live streams are running, the limit (WARDWATCH_MAX_STREAMS) is "
                                f"{settings.max_streams}: stop one (POST /recordings/{{id}}/stop) and try again")
        recording = create_recording(session=session, source=shown, room=request.room,
                                     patient_ref=request.patient_ref)
        recording.started_at = request.started_at
        recording.status = RecordingStatus.ingesting
        job = create_job(session=session, kind=STREAM_KIND, recording_id=recording.id,
                         params={"url": stored, "source": shown})
        audit.object_id, audit.status_code, audit.detail = str(recording.id), 201, "stream"
        record(session=session, entry=audit)  # the URL stays out of the trail
        return RecordingPublic.model_validate(recording), job.id


def _serialise_admission(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})


def stream_url(*, settings: Settings, job: Job) -> str:
    """The URL the worker opens, decrypted just before use (a value stored before migration 0005 is plain).
    Raises ``SecretUnreadable`` when no configured key opens it."""
    return settings.secret_box().decrypt(str(job.params.get("url", "")))


def stop_stream(*, session: Session, recording_id: int) -> Recording:
    """Ask the reader of a live stream to stop (it keeps the clips and events so far and ends the job as a
    success, ``stopped``). NotFoundError for no recording, ConflictError when no stream of it is live."""
    recording = get_recording(session=session, recording_id=recording_id)
    job = live_job_for(session=session, recording_id=recording_id, kind=STREAM_KIND)
    if job is None:
        raise ConflictError(f"recording {recording_id} is not a running live stream")
    cancel_job(session=session, job_id=job.id)
    return recording


def reencrypt_stream_urls(*, session: Session, box: SecretBox) -> int:
    """After a key rotation (new key first in WARDWATCH_SECRET_KEYS, old ones still listed): re-encrypt every
    stored stream URL with the first key, so the old keys can then be removed. Plain values left by an older
    version get encrypted too. Returns how many were rewritten; raises ``SecretUnreadable`` (and changes
    nothing, the caller's transaction rolls back) if a value opens with none of the keys."""
    count = 0
    for job in session.scalars(select(Job).where(Job.kind == STREAM_KIND)).all():
        stored = job.params.get("url") if isinstance(job.params, dict) else None
        if not isinstance(stored, str) or not stored:
            continue
        rotated = box.rotate(stored)
        if rotated != stored:
            job.params = {**job.params, "url": rotated, "source": job.params.get("source") or redact_url(
                box.decrypt(rotated))}
            count += 1
    session.flush()
    return count
