"""Finding jobs whose worker is gone and deciding what becomes of them (and of their recordings).

A job's lease expires when its owner stops renewing it: the process died (``kill -9``, OOM, a host lost) or
hangs. Such a job is re-queued for another worker -- scoring resumes after the clips already committed, a
fine-tune from its last epoch state, a live stream from where it stopped -- or, once it used its
``job_max_attempts``, failed with "worker lost" (a recording that kills its worker every time ends instead of
looping). At start-up a process also takes back jobs whose owner was a dead process on this host, without
waiting for their leases to run out.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.tables import Clip, Job, Recording, RecordingStatus
from server.services.jobs import (
    LIVE,
    JobKind,
    Reclaimed,
    close_children,
    create_job,
    expired_jobs,
    fail_job,
    owner_is_dead_here,
    queued_jobs,
    reclaim,
    settle_abandoned_cancels,
)
from server.services.recordings import mark_failed
from server.settings import Settings

#: a job to hand to a worker: (job id, kind, recording id)
Work = tuple[int, str, int | None]


def recover_lost_jobs(*, session: Session, settings: Settings, at_startup: bool = False) -> Reclaimed:
    """Re-queue or fail the running jobs whose lease expired (``at_startup``: also those whose owner was a dead
    process of this host); close the recordings of the failed ones. Returns what to dispatch again."""
    now = utcnow()
    lost = expired_jobs(session=session, now=now, dead_owner=owner_is_dead_here if at_startup else None)
    done = reclaim(session=session, jobs=lost, max_attempts=settings.job_max_attempts)
    for job_id, kind, recording_id in done.failed:
        job = session.get(Job, job_id)
        recording = session.get(Recording, recording_id) if recording_id is not None else None
        if job is not None and kind == JobKind.segment and job.parent_id is not None:
            _close_parent(session, job)
        if job is not None and recording is not None:
            _close_recording(session, recording, kind, job.error or "worker lost")
    settle_abandoned_cancels(session=session, now=now)
    session.flush()
    return done


def _close_parent(session: Session, segment: Job) -> None:
    """A segment lost its worker every time: its recording's scoring job fails with it, the other segments stop."""
    parent = session.get(Job, segment.parent_id)
    if parent is not None and parent.status in LIVE:
        fail_job(session=session, job_id=parent.id, reason=f"segment {segment.segment}: {segment.error}")
        close_children(session=session, parent_id=parent.id)


def _close_recording(session: Session, recording: Recording, kind: str, reason: str) -> None:
    """A failed job's recording: a stream keeps what it recorded (scored, with the reason); a file fails."""
    if recording.status not in (RecordingStatus.queued, RecordingStatus.ingesting):
        return
    clips = session.scalar(select(exists().where(Clip.recording_id == recording.id)))
    if kind == JobKind.stream and clips:
        recording.status, recording.error = RecordingStatus.scored, reason
    else:
        mark_failed(recording=recording, reason=reason)


def pending_work(*, session: Session) -> list[Work]:
    """Embedded start-up: every queued job (its hand-over died with the previous process), plus a new scoring
    job for each recording left queued or half-scored with no live job (rows from before jobs were leased).
    A live stream's recording is never re-scored as a file: it has none."""
    work: list[Work] = [(job.id, job.kind, job.recording_id) for job in queued_jobs(session=session)]
    has_live_job = exists().where(Job.recording_id == Recording.id, Job.status.in_(LIVE))
    is_stream = exists().where(Job.recording_id == Recording.id, Job.kind == JobKind.stream.value)
    orphans: Sequence[Recording] = session.scalars(
        select(Recording).where(Recording.status.in_([RecordingStatus.queued, RecordingStatus.ingesting]),
                                ~has_live_job, ~is_stream).order_by(Recording.id)
    ).all()
    for recording in orphans:
        job = create_job(session=session, kind=JobKind.score, recording_id=recording.id, params={"resumed": True})
        work.append((job.id, job.kind, recording.id))
    return work
