"""Finding jobs whose worker is gone and deciding what becomes of them (and of their recordings).

A job's lease expires when its owner stops renewing it: the process died (``kill -9``, OOM, a host lost) or
hangs. Such a job is re-queued for another worker -- scoring resumes after the clips already committed, a
fine-tune from its last epoch state, a live stream from where it stopped -- or, once it used its
``job_max_attempts``, failed with "worker lost" (a recording that kills its worker every time ends instead of
looping). At start-up a process also takes back jobs whose owner was a dead process on this host, without
waiting for their leases to run out.

A queued job can be lost too: its broker message gone with a broker restarted without its data, or never sent
because the broker was down. :func:`lost_messages` finds those and has them sent again, boundedly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.tables import Clip, Job, Recording, RecordingStatus
from server.services.jobs import (
    LIVE,
    JobKind,
    Reclaimed,
    create_job,
    expired_jobs,
    fail_job,
    fail_parent_of,
    owner_is_dead_here,
    queued_jobs,
    reclaim,
    settle_abandoned_cancels,
    waiting_jobs,
)
from server.services.recordings import mark_failed
from server.settings import Settings
from server.worker.app import INFERENCE_QUEUE, STREAMS_QUEUE, TRAINING_QUEUE

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
    fail_parent_of(session=session, segment=segment, reason=f"segment {segment.segment}: {segment.error}")


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


#: the broker queue each kind of job is sent to (server.worker.dispatch)
JOB_QUEUES: dict[str, str] = {JobKind.score: INFERENCE_QUEUE, JobKind.segment: INFERENCE_QUEUE,
                              JobKind.finetune: TRAINING_QUEUE, JobKind.stream: STREAMS_QUEUE}
NEVER_TAKEN = "never taken by a worker"


@dataclass(frozen=True)
class Redispatch:
    """What a pass over waiting jobs decided: jobs to send again, jobs failed after the bounded sends, and the
    queues found short of messages (the next pass acts on a queue only if it is still short)."""

    resend: list[Work]
    failed: list[Work]
    short: frozenset[str]


def lost_messages(*, session: Session, settings: Settings, depths: Mapping[str, int],
                  short_before: frozenset[str] = frozenset()) -> Redispatch:
    """Queued jobs whose broker message may be lost, to be sent again.

    The broker can lose a message -- restarted without its data, a send that failed while it was down, a
    delivery that died with its worker before the job started -- and then nothing would ever start the job. A job
    is suspect once it has waited ``job_redispatch_seconds`` since its last hand-over (or creation). A queue is
    short when it holds fewer messages (``depths``: ready messages per queue, read from the broker just before)
    than it has suspects, so a backlog the broker still holds is never doubled. Suspects are sent again only when
    their queue was short in the previous pass too (``short_before``), and only as many as it is short of, longest
    waiting first: a message a worker has just taken but whose job it has not started yet (a model still loading)
    is missing from the count for a while, and must not make the whole backlog go again. Whatever is sent twice
    is harmless: the first delivery starts the job (atomic queued -> running), the other finds it taken and does
    nothing. Each suspect's ``dispatched_at`` is set here, before it is sent, so
    another sweeper passes it over for an interval. A job handed over ``job_max_dispatches`` times without ever
    starting is failed (its recording too) instead of being sent for ever: no worker takes it."""
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.job_redispatch_seconds)
    by_queue: dict[str, list[Job]] = {}
    for job in waiting_jobs(session=session, handed_over_before=cutoff):
        if (queue := JOB_QUEUES.get(job.kind)) is not None:
            by_queue.setdefault(queue, []).append(job)
    short = frozenset(queue for queue, jobs in by_queue.items() if depths.get(queue, 0) < len(jobs))
    resend: list[Work] = []
    failed: list[Work] = []
    for queue in sorted(short & short_before):
        # only as many as the queue is short of, those waiting longest first: a worker still starting holds a
        # message it has taken but not yet started, and must not make the whole backlog go again
        waiting = sorted(by_queue[queue], key=lambda j: (j.dispatched_at or j.created_at, j.id))
        for job in waiting[: len(waiting) - depths.get(queue, 0)]:
            row = (job.id, job.kind, job.recording_id)
            if job.dispatch_count < settings.job_max_dispatches:
                job.dispatched_at = now  # claimed in this transaction: another sweeper leaves it for an interval
                resend.append(row)
                continue
            reason = (f"{NEVER_TAKEN}: handed to the broker {job.dispatch_count} times without starting (is a worker "
                      f"consuming the {queue} queue?)")
            fail_job(session=session, job_id=job.id, reason=reason)
            recording = session.get(Recording, job.recording_id) if job.recording_id is not None else None
            if recording is not None:
                _close_recording(session, recording, job.kind, reason)
            failed.append(row)
    session.flush()
    return Redispatch(resend=resend, failed=failed, short=short)
