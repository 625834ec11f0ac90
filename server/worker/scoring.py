"""The bodies of the scoring tasks: ``wardwatch.process_recording`` (one recording) and ``wardwatch.score_segment``
(one segment of it).

``process_recording`` starts the recording's scoring job and plans its segments (``server.worker.segments``):

* one segment (a recording no longer than ``WARDWATCH_SEGMENT_SECONDS``), or no way to hand segments to other
  workers (a plain process running the task itself): it scores the whole recording under the job's lease and
  finalises it (``server.worker.finalise``);
* several: it creates one segment job per range (unique per parent: planning twice adds none), hands its job to
  them (``wait_for_children``: running, no owner) and sends them to the ``inference`` queue, where any worker
  takes them; the task that ends the last one finalises the recording, exactly once.

Both run the same way inside the embedded server (thread pool) and a Celery worker, and are idempotent: a
duplicate message finds its job taken or finished and does nothing, a recording already scored is left alone, a
segment resumes after the clips it committed, and rows are unique by constraint. A transient error (database or
broker connection) hands the job back and raises ``RetryLater`` for the runner to try again after a backoff
(``server.worker.retry``); any other failure fails the recording and its job with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from ingest.errors import IngestError
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, ModelVersion, Recording, RecordingStatus
from server.job_lease import JobLease
from server.observability.metrics import observe_job
from server.pipeline import WorkerContext
from server.services.jobs import (
    IllegalTransition,
    JobKind,
    LeaseLost,
    cancel_job,
    children,
    fail_job,
    fail_parent_of,
    get_job,
    new_owner,
    release_job,
    settle_cancelled,
    start_job,
    succeed_job,
    wait_for_children,
)
from server.services.models import get_active_model
from server.services.recordings import mark_failed
from server.worker.finalise import claim_finalisation, finalise, finalise_when_done
from server.worker.retry import RetryLater, is_transient
from server.worker.segments import (
    ParentClosed,
    Segment,
    Target,
    committed_count,
    load_target,
    plan_segments,
    score_segment,
)

log = logging.getLogger(__name__)


def process_recording(ctx: WorkerContext, recording_id: int, job_id: int | None = None) -> None:
    """Score ``recording_id`` (in one piece or as segment jobs); on failure mark it and its job failed.

    With a job: the job is started first (queued -> running, with a lease kept by a heartbeat thread); a job that
    is not queued is left alone (a duplicate message, a re-queue race), except that a job waiting on its segments
    has its queued segments sent again (their first hand-over may have been lost). If the lease is lost midway,
    this run stops without writing anything more.
    """
    owner = new_owner()
    if job_id is not None:
        try:
            with session_scope(ctx.session_factory) as session:
                start_job(session=session, job_id=job_id, owner=owner, lease_seconds=ctx.settings.job_lease_seconds)
        except LookupError as exc:
            log.info("recording %s: %s; nothing to do", recording_id, exc)
            return
        except IllegalTransition as exc:  # taken, finished -- or waiting on its segments
            log.info("recording %s: %s", recording_id, exc)
            try:
                _send_queued_segments(ctx, job_id)
            except Exception as send_error:  # the broker is away: try again later, fail the job if it stays away
                _raise_retry_if_transient(send_error, job_id)
                raise
            return
        except Exception as exc:
            _raise_retry_if_transient(exc, job_id)
            raise
    lease = JobLease(ctx.session_factory, ctx.settings, job_id, owner) if job_id is not None else None
    with observe_job("score") as metrics:
        _guarded(ctx, recording_id, job_id, owner, lease, metrics, lambda: _score(ctx, recording_id, job_id, lease))


def run_segment(ctx: WorkerContext, segment_job_id: int) -> None:
    """Score one segment job's clips; the task that ends the last segment of a recording finalises it.

    A segment job already succeeded (a duplicate message, or a retry after the finalisation met a transient
    error) goes straight to the finalisation check, which does nothing once the recording is done.
    """
    owner = new_owner()
    try:
        with session_scope(ctx.session_factory) as session:
            job = start_job(session=session, job_id=segment_job_id, owner=owner,
                            lease_seconds=ctx.settings.job_lease_seconds)
            parent_id, recording_id = job.parent_id, job.recording_id
    except LookupError as exc:
        log.info("segment job %s: %s; nothing to do", segment_job_id, exc)
        return
    except IllegalTransition as exc:
        log.info("segment job %s: %s", segment_job_id, exc)
        if exc.status == JobStatus.succeeded:
            try:
                with session_scope(ctx.session_factory) as session:
                    parent_id = get_job(session=session, job_id=segment_job_id).parent_id
            except Exception as read_error:
                _raise_retry_if_transient(read_error, segment_job_id)
                raise
            if parent_id is not None:
                _finalise_guarded(ctx, parent_id, segment_job_id)
        return
    except Exception as exc:
        _raise_retry_if_transient(exc, segment_job_id)
        raise
    assert parent_id is not None and recording_id is not None
    lease = JobLease(ctx.session_factory, ctx.settings, segment_job_id, owner)
    finaliser: list[str | None] = []  # the scoring job's new owner, when this segment's end claimed it
    with observe_job("segment") as metrics:
        done = _guarded(ctx, recording_id, segment_job_id, owner, lease, metrics,
                        lambda: finaliser.append(_score_segment_job(ctx, segment_job_id, parent_id, lease)))
    if done:
        _finalise_guarded(ctx, parent_id, segment_job_id, finaliser[0] if finaliser else None)


def _finalise_guarded(ctx: WorkerContext, parent_id: int, segment_job_id: int, owner: str | None = None) -> None:
    try:
        finalise_when_done(ctx, parent_id, owner)
    except RetryLater as exc:  # retried as this segment's task, which is done, so the retry finalises
        raise RetryLater(segment_job_id, exc.__cause__ or exc) from exc
    except Exception as exc:  # the claim itself met the database away: nothing is ours yet
        _raise_retry_if_transient(exc, segment_job_id)
        raise


def _guarded(ctx: WorkerContext, recording_id: int, job_id: int | None, owner: str, lease: JobLease | None,
             metrics: dict[str, str], body: Callable[[], None]) -> bool:
    """Run ``body`` under the lease; True when it ended normally. A lost lease or a closed parent writes nothing;
    a transient error hands the job back and raises RetryLater; any other failure lands on the recording and on
    the job (and, for a segment, on its recording's scoring job)."""
    try:
        if lease is None:
            body()
        else:
            with lease:
                body()
        return True
    except LeaseLost as exc:
        metrics["outcome"] = "lease_lost"
        log.warning("recording %s, job %s: %s; another worker carries on", recording_id, job_id, exc)
    except ParentClosed as exc:
        metrics["outcome"] = "cancelled"
        log.info("recording %s, segment job %s: %s; stopping", recording_id, job_id, exc)
        _settle_segment(ctx, job_id, owner)
    except Exception as exc:  # noqa: BLE001 - every failure must land on the recording, not vanish in a thread
        if is_transient(exc):
            metrics["outcome"] = "retry"
            log.warning("recording %s, job %s: transient error (%s); handed back for a retry", recording_id,
                        job_id, exc)
            _release(ctx, job_id, owner, exc)
            raise RetryLater(job_id, exc) from exc
        metrics["outcome"] = "failed"
        reason = str(exc) if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}"
        log.exception("recording %s failed", recording_id)
        _fail(ctx, recording_id, job_id, owner, reason)
    return False


def _score(ctx: WorkerContext, recording_id: int, job_id: int | None, lease: JobLease | None) -> None:
    """The scoring job's work: skip a scored recording, else score in one piece or hand out segments."""
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise LookupError(f"recording {recording_id} not found")
        job = session.get(Job, job_id) if job_id is not None else None
        version = _version_for(session, job)
        if recording.status == RecordingStatus.scored and committed_count(session, recording_id, version.id):
            log.info("recording %s already scored by model %s", recording_id, version.id)
            if lease is not None:
                succeed_job(session=session, job_id=lease.job_id, owner=lease.owner,
                            result={"skipped": "already scored"})
            return
        target = load_target(ctx, session, recording, version)
        segments = children(session=session, parent_id=job_id) if job_id is not None else []
        duration = float(recording.duration or 0.0)
        recording.status = RecordingStatus.ingesting
        recording.error = None
    plan = plan_segments(duration=duration, spec=target.spec, segment_seconds=ctx.settings.segment_seconds)
    if lease is not None and (segments or (len(plan) > 1 and ctx.dispatch_segment is not None)):
        _hand_out(ctx, target, lease, plan)
        return
    log.info("recording %s: scoring in one piece", recording_id)
    warnings = score_segment(ctx, target, Segment(0, None), lease, job_id)
    finalise(ctx, recording_id, target.version_id, lease, warnings)


def _version_for(session: Session, job: Job | None) -> ModelVersion:
    """The model version a job scores with: pinned in its params when it was split (so every segment uses the same
    one, whatever is promoted meanwhile), else the active one."""
    pinned = (job.params or {}).get("model_version_id") if job is not None else None
    version = session.get(ModelVersion, int(pinned)) if pinned is not None else get_active_model(session=session)
    if version is None:
        raise RuntimeError("no active model version: register one with `wardwatch db upgrade` + server start")
    return version


def _hand_out(ctx: WorkerContext, target: Target, lease: JobLease, plan: list[Segment]) -> None:
    """Create the segment jobs (once), hand the scoring job to them and send the queued ones to workers; a job whose
    segments all succeeded already is finalised here (its finaliser died), one with a failed segment fails."""
    with session_scope(ctx.session_factory) as session:
        lease.renew(session)
        job = get_job(session=session, job_id=lease.job_id)
        existing = children(session=session, parent_id=job.id)
        if not existing:
            job.params = {**(job.params or {}), "model_version_id": target.version_id, "segments": len(plan)}
            for number, segment in enumerate(plan):
                session.add(Job(kind=JobKind.segment.value, status=JobStatus.queued, recording_id=target.recording_id,
                                parent_id=job.id, segment=number, params=segment.as_params(),
                                created_by=job.created_by))
            session.flush()
            existing = children(session=session, parent_id=job.id)
            log.info("recording %s: %d segments of %.0f s handed out", target.recording_id, len(plan),
                     ctx.settings.segment_seconds)
        ended = [child for child in existing if child.status in (JobStatus.failed, JobStatus.cancelled)]
        if ended:
            raise RuntimeError(f"segment {ended[0].segment} ended {ended[0].status.value}: {ended[0].error}")
        done = all(child.status == JobStatus.succeeded for child in existing)
        warnings = [error for child in existing for error in (child.result or {}).get("errors", [])]
        queued = [child.id for child in existing if child.status == JobStatus.queued]
        if not done:
            wait_for_children(session=session, job_id=job.id, owner=lease.owner)
    if done:
        finalise(ctx, target.recording_id, target.version_id, lease, warnings)
    else:
        _send(ctx, queued)


def _send_queued_segments(ctx: WorkerContext, job_id: int) -> None:
    """A scoring job that waits on its segments (running, no owner): send its queued segments again."""
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.running or job.lease_owner is not None:
            return
        queued = [child.id for child in children(session=session, parent_id=job_id) if child.status == JobStatus.queued]
    _send(ctx, queued)


def _send(ctx: WorkerContext, segment_job_ids: list[int]) -> None:
    if ctx.dispatch_segment is None:  # a process that cannot hand them out runs them itself, one after another
        for segment_job_id in segment_job_ids:
            run_segment(ctx, segment_job_id)
        return
    for segment_job_id in segment_job_ids:
        ctx.dispatch_segment(segment_job_id)


def _score_segment_job(ctx: WorkerContext, segment_job_id: int, parent_id: int, lease: JobLease) -> str | None:
    """Score the segment and close it; in the same transaction, claim the recording's finalisation if this was the
    last live segment (returns the claim's owner)."""
    with session_scope(ctx.session_factory) as session:
        job = get_job(session=session, job_id=segment_job_id)
        parent = get_job(session=session, job_id=parent_id)
        if parent.status != JobStatus.running:
            raise ParentClosed(f"the scoring job {parent_id} is {parent.status.value}")
        segment = Segment.from_params(job.params)
        recording = session.get(Recording, job.recording_id)
        if recording is None:
            raise LookupError(f"recording {job.recording_id} not found")
        target = load_target(ctx, session, recording, _version_for(session, parent))
    errors = score_segment(ctx, target, segment, lease, parent_id)
    with session_scope(ctx.session_factory) as session:
        succeed_job(session=session, job_id=segment_job_id, owner=lease.owner,
                    result={"clips": committed_count(session, target.recording_id, target.version_id, segment),
                            "errors": errors, "worker": lease.owner.rsplit(":", 1)[0]})  # host:pid
        return claim_finalisation(session, parent_id, ctx.settings)


def _raise_retry_if_transient(exc: Exception, job_id: int | None) -> None:
    """A transient error before the job was ours: retry (nothing to hand back). Anything else the caller
    re-raises as it was."""
    if is_transient(exc):
        raise RetryLater(job_id, exc) from exc


def _release(ctx: WorkerContext, job_id: int | None, owner: str, exc: BaseException) -> None:
    """Hand the job back (running -> queued) for the retry; if the database is still away, its lease runs out and
    the sweeper re-queues it instead."""
    if job_id is None:
        return
    try:
        with session_scope(ctx.session_factory) as session:
            release_job(session=session, job_id=job_id, owner=owner, reason=f"retrying after {type(exc).__name__}")
    except LeaseLost:
        pass  # handed to its segments already, or taken by the sweeper: nothing of ours to give back
    except Exception:  # noqa: BLE001
        log.warning("job %s: could not hand it back after a transient error; its lease will expire", job_id)


def _fail(ctx: WorkerContext, recording_id: int, job_id: int | None, owner: str, reason: str) -> None:
    """Fail the job and the recording in one transaction; a segment's failure also fails its recording's scoring
    job and stops the other segments. A job no longer this worker's (its lease taken) writes nothing."""
    try:
        with session_scope(ctx.session_factory) as session:
            job = session.get(Job, job_id) if job_id is not None else None
            if job_id is not None:
                fail_job(session=session, job_id=job_id, reason=reason, owner=owner)
            if job is not None and job.parent_id is not None:
                if not fail_parent_of(session=session, segment=job, reason=f"a segment failed: {reason}"):
                    return  # the recording's scoring job ended or is being finalised: it says how the recording ends
            recording = session.get(Recording, recording_id)
            if recording is not None:
                mark_failed(recording=recording, reason=reason)
    except LeaseLost:
        log.warning("recording %s: job %s is no longer this worker's; its failure (%s) is not written", recording_id,
                    job_id, reason)


def _settle_segment(ctx: WorkerContext, job_id: int | None, owner: str) -> None:
    """A segment whose recording's job ended: cancelled, and finished now."""
    if job_id is None:
        return
    try:
        with session_scope(ctx.session_factory) as session:
            cancel_job(session=session, job_id=job_id)
        with session_scope(ctx.session_factory) as session:
            settle_cancelled(session=session, job_id=job_id, owner=owner, reason="its recording's scoring job ended")
    except Exception:  # noqa: BLE001 - the sweeper settles it once its lease runs out
        log.warning("segment job %s: could not record that it stopped", job_id)
