"""The one place a job's state changes: its kinds, the allowed transitions, and leases.

Why one module: scoring, fine-tuning, streams, the routes and start-up used to write ``job.status`` each in
their own way, so a job whose process died stayed ``running`` forever beside the job that replaced it. Now
every change goes through a function here, which checks the transition against :data:`TRANSITIONS` and raises
:class:`IllegalTransition` (a service error, 409 if it reaches a route) for any other.

The state machine::

    queued  --start (lease, attempts+1)-->  running  --succeed-->  succeeded
       |                                    |  |  |--fail------->  failed
       |--cancel--> cancelled <--cancel-----+  |  '--requeue----->  queued   (lease expired: owner is dead)
       '--fail (never started: refused)------> failed
    running --heartbeat--> running (lease renewed; only by its owner)
    running --release--> queued      (its owner met a transient error and hands it back for a retry)
    cancelled --succeed--> succeeded   (a *stream* whose stop was asked ends as a success, ``stopped``)

A scoring job split into *segment* jobs (children, ``parent_id``) stays ``running`` without an owner while its
children run (:func:`wait_for_children`): the sweeper leaves it alone as long as a child is live; the task
that finishes the last child takes its lease (:func:`claim_waiting`, atomic: one finalisation) and closes it.

A running job holds a lease: ``lease_owner`` (``host:pid:run``, one per start) and ``lease_expires_at``,
renewed by the owner's heartbeat. Writes of an owner check that it still holds the lease (:class:`LeaseLost`
otherwise), so a worker that was only paused past its lease cannot overwrite the run that replaced it.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from server.db.base import utcnow
from server.db.tables import Job, JobStatus
from server.services.errors import ConflictError, NotFoundError
from server.services.pagination import id_page


class JobKind(enum.StrEnum):
    """What a job does; stored as these strings in ``job.kind``."""

    score = "score"  # score one recording (upload, import, watch folder, resume)
    finetune = "finetune"  # ATCON fine-tuning into a candidate model version
    stream = "stream"  # read and score a live stream until stopped
    segment = "segment"  # score a range of clips of a recording, a child of its score job


_Q, _R, _S, _F, _C = JobStatus.queued, JobStatus.running, JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled
#: from -> the statuses a job may move to (any kind); :func:`_check` adds the one stream-only edge.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _Q: frozenset({_R, _C, _F}),
    _R: frozenset({_R, _Q, _S, _F, _C}),
    _S: frozenset(),
    _F: frozenset(),
    _C: frozenset(),
}
LIVE = (_Q, _R)
WORKER_LOST = "worker lost"


class IllegalTransition(ConflictError):
    """The job cannot move from its status to the one asked (it finished, or another worker took it)."""

    def __init__(self, job: Job, to: JobStatus) -> None:
        super().__init__(f"job {job.id} is {job.status.value}: it cannot become {to.value}")
        self.status = job.status


class LeaseLost(RuntimeError):
    """The caller no longer holds the job's lease: it expired and the job was re-queued or closed."""


#: the first half of the run part of every owner this process makes: tells this process's runs from those of an
#: earlier process that had the same pid (pid 1 in a container after each restart)
_PROCESS_TAG = uuid.uuid4().hex[:8]


def new_owner() -> str:
    """A lease owner id for one run of one job, ``host:pid:run``: host and pid (so a restart on this host can tell
    that the owner is dead) and a random run part (so two runs never pass for each other)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TAG}{uuid.uuid4().hex[:8]}"


def owner_is_dead_here(owner: str | None) -> bool:
    """True for an owner on this host whose process is gone (or an earlier process with this very pid)."""
    if not owner or owner.count(":") < 2:
        return False
    host, pid_text, run = owner.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return not run.startswith(_PROCESS_TAG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _check(job: Job, to: JobStatus) -> None:
    allowed = TRANSITIONS[job.status] | ({_S} if job.status == _C and job.kind == JobKind.stream else set())
    if to not in allowed:
        raise IllegalTransition(job, to)


def _owned(job: Job, owner: str | None) -> None:
    if owner is not None and job.lease_owner != owner:
        raise LeaseLost(f"job {job.id} is no longer held by {owner} (now {job.status.value}, {job.lease_owner})")


def get_job(*, session: Session, job_id: int) -> Job:
    """The job, or NotFoundError."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError("job", job_id)
    return job


def list_jobs(*, session: Session, kind: str | None, status: JobStatus | None, limit: int,
              cursor: int | None) -> tuple[Sequence[Job], int, int | None]:
    """A page of jobs, newest first, of ``kind`` and in ``status`` when given: (jobs, total matching, next cursor)."""
    query = select(Job)
    if kind:
        query = query.where(Job.kind == kind)
    if status:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page, next_cursor = id_page(session, query, id_column=Job.id, limit=limit, cursor=cursor)
    return page, total, next_cursor


def create_job(*, session: Session, kind: JobKind, recording_id: int | None = None,
               params: dict[str, Any] | None = None, created_by: str | None = None) -> Job:
    """A new queued job (flushed, so it has its id); the caller enqueues it once the transaction commits."""
    job = Job(kind=JobKind(kind).value, status=_Q, recording_id=recording_id, params=params or {},
              created_by=created_by)
    session.add(job)
    session.flush()
    return job


def note_task_id(*, session: Session, job_id: int, task_id: str | None) -> None:
    """Remember that a job was handed to the broker: its task id, when, and how many hand-overs so far (not a
    state change: no transition). ``task_id`` None: nothing was sent (embedded mode, or the broker was down)."""
    if task_id is not None:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(celery_id=task_id, dispatched_at=utcnow(), dispatch_count=Job.dispatch_count + 1)
                        .execution_options(synchronize_session=False))
        if (loaded := session.identity_map.get(session.identity_key(Job, job_id))) is not None:
            session.expire(loaded)  # a caller holding the row reads the new values


def start_job(*, session: Session, job_id: int, owner: str, lease_seconds: float) -> Job:
    """queued -> running, taking the lease and counting the attempt. Atomic (one conditional UPDATE), so of two
    workers handed the same job exactly one starts it; the other gets IllegalTransition."""
    now = utcnow()
    taken = session.execute(
        update(Job).where(Job.id == job_id, Job.status == _Q)
        .values(status=_R, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=Job.attempts + 1, started_at=now, progress=0.0, finished_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    job = get_job(session=session, job_id=job_id)
    session.refresh(job)
    if not taken:
        raise IllegalTransition(job, _R)
    return job


def heartbeat(*, session: Session, job_id: int, owner: str, lease_seconds: float, progress: float | None = None,
              result: dict[str, Any] | None = None) -> None:
    """running -> running: renew the owner's lease (and note progress / merge ``result``). Raises LeaseLost when
    the job is no longer running under this owner (re-queued after its lease expired, closed, cancelled --
    a cancelled job's owner learns it from :func:`is_cancelled`)."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    if result is not None:
        job = session.get(Job, job_id)
        values["result"] = {**((job.result if job else None) or {}), **result}
    renewed = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_([_R, _C]))
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if (loaded := session.get(Job, job_id)) is not None:
        session.expire(loaded)
    if not renewed:
        raise LeaseLost(f"job {job_id}: lease of {owner} lost")


def is_cancelled(*, session: Session, job_id: int) -> bool:
    """Has a stop or cancel been asked for this job (or is it gone)?"""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is None or status == _C


def succeed_job(*, session: Session, job_id: int, owner: str | None, result: dict[str, Any] | None = None) -> Job:
    """running -> succeeded by its owner (``result`` merged into what progress wrote). A fine-tune cancelled
    while it finished stays cancelled (the administrator's word); a stopped stream ends succeeded."""
    job = get_job(session=session, job_id=job_id)
    if job.status == _C and job.kind != JobKind.stream:
        return _close(job, _C, owner, result=result, error=job.error)
    return _close(job, _S, owner, result=result, error=None)


def fail_job(*, session: Session, job_id: int, reason: str, owner: str | None = None,
             result: dict[str, Any] | None = None) -> Job:
    """running (or never started: queued) -> failed with ``reason``. ``owner``: the worker closing its own run
    (checked); None: a closer that holds no lease (start-up, the sweeper, a refused stream). A job cancelled
    meanwhile keeps ``cancelled`` and gets the reason."""
    job = get_job(session=session, job_id=job_id)
    return _close(job, _C if job.status == _C else _F, owner, result=result, error=reason)


def settle_cancelled(*, session: Session, job_id: int, owner: str | None, reason: str) -> Job:
    """The owner of a cancelled job records that it stopped (the job stays cancelled; now finished)."""
    job = get_job(session=session, job_id=job_id)
    if job.status != _C:
        raise IllegalTransition(job, _C)
    return _close(job, _C, owner, result=None, error=reason)


def _close(job: Job, to: JobStatus, owner: str | None, *, result: dict[str, Any] | None,
           error: str | None) -> Job:
    if job.status != to or to != _C:
        _check(job, to)
    if job.status in (_R, _C) and job.lease_owner is not None:
        _owned(job, owner)
    job.status, job.error, job.finished_at = to, error, utcnow()
    job.lease_owner, job.lease_expires_at = None, None
    if result is not None:
        job.result = {**(job.result or {}), **result}
    if to == _S:
        job.progress = 1.0
    return job


def cancel_job(*, session: Session, job_id: int, kinds: tuple[JobKind, ...] | None = None) -> Job:
    """queued -> cancelled (finished now) or running -> cancelled (its owner sees it and stops, then records
    when). ``kinds``: the kinds this caller may cancel (ConflictError for another)."""
    job = get_job(session=session, job_id=job_id)
    if kinds is not None and job.kind not in kinds:
        names = ", ".join(kind.value for kind in kinds)
        raise ConflictError(f"only {names} jobs can be cancelled; job {job_id} is a {job.kind} job")
    if job.status not in LIVE:
        raise ConflictError(f"job {job_id} is already {job.status.value}")
    was_queued = job.status == _Q
    _check(job, _C)
    job.status = _C
    if was_queued:
        job.finished_at = utcnow()
    return job


def requeue_job(*, session: Session, job: Job, reason: str) -> Job:
    """running -> queued: its owner is gone (lease expired, or its pid died on this host); the next start
    counts as another attempt. The reason is kept in ``error`` until the job ends."""
    _check(job, _Q)
    job.status, job.error = _Q, reason
    job.lease_owner, job.lease_expires_at = None, None
    return job


@dataclass(frozen=True)
class Reclaimed:
    """What a sweep did: jobs to hand to a worker again, and jobs closed for good."""

    requeued: list[tuple[int, str, int | None]]  # (job id, kind, recording id)
    failed: list[tuple[int, str, int | None]]


def expired_jobs(*, session: Session, now: datetime, dead_owner: Any = None) -> list[Job]:
    """Running jobs whose lease has expired (or that have none: rows from before leases, and scoring jobs whose
    segments all ended without one finalising it) -- and, where ``dead_owner(owner)`` says so, those whose owner is
    known dead though the lease still runs. A job waiting on live segment jobs is not expired: they carry it.
    Locked on PostgreSQL (SKIP LOCKED) so two sweepers never take the same job."""
    query = select(Job).where(Job.status == _R, ~_has_live_child()).order_by(Job.id)
    if dead_owner is None:
        query = query.where(or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    jobs = session.scalars(query).all()
    return [job for job in jobs if job.lease_expires_at is None or job.lease_expires_at < now
            or (dead_owner is not None and dead_owner(job.lease_owner))]


def reclaim(*, session: Session, jobs: list[Job], max_attempts: int) -> Reclaimed:
    """Re-queue each job whose owner is gone, or fail it with "worker lost" once it used ``max_attempts``
    (a recording that kills its worker every time must end, not loop)."""
    requeued, failed = [], []
    for job in jobs:
        owner = job.lease_owner or "unknown"
        row = (job.id, job.kind, job.recording_id)
        if job.attempts >= max_attempts:
            fail_job(session=session, job_id=job.id, reason=f"{WORKER_LOST}: its worker ({owner}) stopped "
                     f"answering in each of {job.attempts} attempts")
            failed.append(row)
        else:
            requeue_job(session=session, job=job, reason=f"{WORKER_LOST} ({owner}); re-queued, attempt "
                        f"{job.attempts + 1} of {max_attempts} next")
            requeued.append(row)
    return Reclaimed(requeued=requeued, failed=failed)


def settle_abandoned_cancels(*, session: Session, now: datetime) -> int:
    """Cancelled jobs whose owner died before recording that it stopped: finished now."""
    jobs = session.scalars(select(Job).where(Job.status == _C, Job.finished_at.is_(None),
                                             or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)))
    count = 0
    for job in jobs:
        job.finished_at, job.lease_owner, job.lease_expires_at = now, None, None
        count += 1
    return count


def queued_jobs(*, session: Session, kinds: tuple[JobKind, ...] | None = None) -> list[Job]:
    """Jobs waiting for a worker (oldest first)."""
    query = select(Job).where(Job.status == _Q).order_by(Job.id)
    if kinds is not None:
        query = query.where(Job.kind.in_([kind.value for kind in kinds]))
    return list(session.scalars(query))


def waiting_jobs(*, session: Session, handed_over_before: datetime) -> list[Job]:
    """Queued jobs last handed to a broker (or, never handed over, created) before ``handed_over_before``: those
    whose message may be lost. Oldest first; locked on PostgreSQL (SKIP LOCKED) so two sweepers never both take
    one in the same moment."""
    last = func.coalesce(Job.dispatched_at, Job.created_at)
    query = select(Job).where(Job.status == _Q, last < handed_over_before).order_by(Job.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def live_job_for(*, session: Session, recording_id: int, kind: JobKind) -> Job | None:
    """The queued or running job of ``kind`` on a recording, if any."""
    return session.scalars(select(Job).where(Job.recording_id == recording_id, Job.kind == kind.value,
                                             Job.status.in_(LIVE)).order_by(Job.id.desc())).first()


def _has_live_child():  # type: ignore[no-untyped-def]
    """``EXISTS`` a queued or running child of the ``job`` row in the enclosing query."""
    child = aliased(Job)
    return exists().where(child.parent_id == Job.id, child.status.in_(LIVE))


def release_job(*, session: Session, job_id: int, owner: str, reason: str) -> Job:
    """running -> queued by its owner, which met a transient error and will be retried: the attempt is handed
    back (not counted against ``job_max_attempts``, which bounds lost workers) and ``result.retries`` counts it.
    Raises LeaseLost when the owner no longer holds it."""
    job = get_job(session=session, job_id=job_id)
    _owned(job, owner)
    _check(job, _Q)
    job.status, job.error = _Q, reason
    job.lease_owner, job.lease_expires_at = None, None
    job.dispatched_at = utcnow()  # its retry message is on its way (held by the worker until its countdown ends)
    job.attempts = max(0, job.attempts - 1)
    job.result = {**(job.result or {}), "retries": int((job.result or {}).get("retries", 0)) + 1}
    return job


def children(*, session: Session, parent_id: int) -> list[Job]:
    """A job's segment jobs, by segment number."""
    return list(session.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.segment)))


def wait_for_children(*, session: Session, job_id: int, owner: str) -> None:
    """The owner of a running job hands it to its children: it stays running, with no owner and no lease, until
    the task that ends the last child claims it (:func:`claim_waiting`). Raises LeaseLost if not the owner."""
    released = session.execute(
        update(Job).where(Job.id == job_id, Job.status == _R, Job.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    ).rowcount
    if (loaded := session.get(Job, job_id)) is not None:
        session.expire(loaded)
    if not released:
        raise LeaseLost(f"job {job_id}: lease of {owner} lost before its segments were handed out")


def claim_waiting(*, session: Session, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Take the lease of a running job that waits on its children, once none of them is live any more. One
    conditional UPDATE: of the tasks that end the last children at the same moment, exactly one gets True."""
    taken = session.execute(
        update(Job).where(Job.id == job_id, Job.status == _R, Job.lease_owner.is_(None), ~_has_live_child())
        .values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    ).rowcount
    if (loaded := session.get(Job, job_id)) is not None:
        session.expire(loaded)
    return bool(taken)


def note_progress(*, session: Session, job_id: int, progress: float) -> bool:
    """Raise a running job's progress to ``progress`` (never lower it: segments commit concurrently, each with
    the count it sees). False when the job is no longer running (its children should stop)."""
    changed = session.execute(
        update(Job).where(Job.id == job_id, Job.status == _R)
        .values(progress=case((Job.progress < progress, progress), else_=Job.progress))
        .execution_options(synchronize_session=False)
    ).rowcount
    return bool(changed)


def fail_parent_of(*, session: Session, segment: Job, reason: str) -> bool:
    """A segment that failed fails its recording's scoring job, and the parent's other segments stop; True if it
    did. A parent that ended already, or that a finaliser holds (its lease: the segments were all done), is left
    as it is."""
    parent = session.get(Job, segment.parent_id) if segment.parent_id is not None else None
    if parent is None or parent.status not in LIVE or parent.lease_owner is not None:
        return False
    fail_job(session=session, job_id=parent.id, reason=reason)
    close_children(session=session, parent_id=parent.id)
    return True


def close_children(*, session: Session, parent_id: int) -> int:
    """A parent that ended (failed): its queued children are cancelled and finished now; running ones find the
    parent closed at their next commit and stop. Returns how many were cancelled."""
    count = 0
    for child in session.scalars(select(Job).where(Job.parent_id == parent_id, Job.status == _Q)):
        child.status, child.finished_at = _C, utcnow()
        count += 1
    return count
