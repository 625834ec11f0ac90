"""Registering a recording file, whatever brought it: an upload, a server-side import, the watch folder.

One path for all three, so every source gets the same checks: duplicate content (409), truncated MP4 (422),
not a usable video (422, kept as a failed recording with its reason), then a queued scoring job.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ingest.errors import IngestError
from ingest.probe import probe
from ingest.timestamps import started_at_from_filename
from server.db.session import session_scope
from server.db.tables import AuditLog, Outcome, Recording, RecordingStatus
from server.schemas import RecordingPublic
from server.services.audit import record
from server.services.jobs import JobKind, create_job, note_task_id
from server.services.quarantine import quarantine
from server.services.recordings import apply_probe, create_recording, find_duplicate, mark_failed
from server.services.upload_staging import claim
from server.services.uploads import TruncatedUploadError, check_complete_mp4
from server.settings import Settings
from server.worker.dispatch import Dispatcher


class RecordingRejected(Exception):
    """The file was refused; ``status`` is the HTTP answer, ``detail`` the message (recording kept as failed)."""

    def __init__(self, status: int, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


@dataclass(frozen=True)
class IntakeOptions:
    room: str | None = None
    patient_ref: str | None = None
    started_at: datetime | None = None
    allow_duplicate: bool = False


def file_sha256(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def register_recording(*, settings: Settings, factory: sessionmaker[Session], source: str, file: Path,
                       sha256: str, size: int, options: IntakeOptions, move_into_data_dir: bool,
                       audit: AuditLog | None = None) -> tuple[RecordingPublic, int]:
    """Create the recording for ``file``, check and probe it, queue its scoring job; returns (recording, job id).

    ``move_into_data_dir``: uploads are moved under ``recordings/<id>/``; imported and watched files stay where
    they are (hospital archives are large) and are referenced by absolute path. Raises RecordingRejected.
    ``audit``: the entry for this write, committed in the same transaction as the recording (allowed, or
    refused with the reason when the file is rejected and kept as a failed recording).
    """
    with session_scope(factory) as session:
        recording = create_recording(session=session, source=source, room=options.room,
                                     patient_ref=options.patient_ref)
        # Start time: the sender's word first, then the file name (camera exports), then container metadata.
        recording.started_at = options.started_at or _time_from_name(settings, source)
        if move_into_data_dir:
            relative = f"recordings/{recording.id}/{file.name}"
            target = settings.data_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            claim(file.parent, recording_id=recording.id, relative_path=relative)  # undone at start-up if we die
            file.replace(target)
            recording.path = relative
        else:
            target = file
            recording.path = str(file)
        recording.size_bytes, recording.sha256 = size, sha256
        reason, status = _check(session, recording, target, options.allow_duplicate)
        if reason is not None:
            if move_into_data_dir:
                _set_aside(settings, recording, target, keep=status != 409)
            mark_failed(recording=recording, reason=reason)
            if audit is not None:
                audit.object_id, audit.outcome, audit.status_code = str(recording.id), Outcome.refused, status
                audit.detail = reason[:256]
                record(session=session, entry=audit)
            session.commit()
            raise RecordingRejected(status, f"{reason} (recording {recording.id} marked failed)", reason)
        recording.status = RecordingStatus.queued
        job = create_job(session=session, kind=JobKind.score, recording_id=recording.id,
                         params={"source": recording.source})
        if audit is not None:
            audit.object_id, audit.status_code = str(recording.id), 201
            record(session=session, entry=audit)
        return RecordingPublic.model_validate(recording), job.id


def _set_aside(settings: Settings, recording: Recording, file: Path, *, keep: bool) -> None:
    """A rejected upload leaves the recordings folder: into the bounded quarantine (``keep``: a file that is
    not a usable video, worth a look), or deleted (a duplicate: its content is already stored)."""
    recording.path = None
    if keep:
        kept = quarantine(file, settings.quarantine_dir, name=f"recording-{recording.id}-{file.name}",
                          cap_bytes=settings.quarantine_max_bytes)
        if kept is not None:
            recording.warnings = [*recording.warnings, f"rejected file kept for diagnosis as quarantine/{kept.name}"]
    else:
        file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        file.parent.rmdir()  # recordings/<id>/, now empty


def _time_from_name(settings: Settings, name: str) -> datetime | None:
    if not settings.filename_time_pattern:
        return None
    return started_at_from_filename(name, settings.filename_time_pattern)


def _check(session: Session, recording: Recording, path: Path, allow_duplicate: bool) -> tuple[str | None, int]:
    """(reason, status) when the file must be refused, else (None, 0); fills the probe fields."""
    assert recording.sha256 is not None
    if not allow_duplicate:
        duplicate = find_duplicate(session=session, sha256=recording.sha256, exclude_id=recording.id)
        if duplicate is not None:
            return f"duplicate: same content as recording {duplicate.id}", 409
    try:
        check_complete_mp4(path)
        info = probe(path)
    except (IngestError, TruncatedUploadError) as exc:
        return str(exc), 422
    apply_probe(recording=recording, info=info)
    return None, 0


def queue_scoring(dispatcher: Dispatcher, factory: sessionmaker[Session], recording_id: int, job_id: int) -> None:
    """Hand a committed recording to a worker and note the task id on its job."""
    task_id = dispatcher.process_recording(recording_id, job_id)
    if task_id is None:
        return
    with session_scope(factory) as session:
        note_task_id(session=session, job_id=job_id, task_id=task_id)
