"""The body of the ``wardwatch.process_recording`` task: score one recording (clips -> classifier -> clip rows ->
events -> explanation media).

It runs the same way inside the embedded server (thread pool) and inside a Celery worker. It is idempotent: a
recording already scored by the active model is left alone, and a run that died midway resumes after the clips
it committed. The clip and event commit paths it shares with live streams live in ``server.pipeline``.
"""

from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.clips import ClipSpec, IngestReport, iter_clips
from ingest.errors import IngestError
from model.events import detect_events
from model.weights import LoadedModel
from server.db.session import session_scope
from server.db.tables import Clip, Recording, RecordingStatus
from server.job_lease import JobLease
from server.observability.metrics import observe_job
from server.observability.scoring import ObservedScorer
from server.pipeline import (
    ScoreRun,
    WorkerContext,
    clip_spec_for,
    committed_clips,
    event_rule,
    file_media,
    flush_clips,
    inference_options,
    record_clip,
    store_event,
)
from server.services.jobs import IllegalTransition, LeaseLost, fail_job, new_owner, start_job, succeed_job
from server.services.models import get_active_model
from server.services.recordings import mark_failed

log = logging.getLogger(__name__)


def process_recording(ctx: WorkerContext, recording_id: int, job_id: int | None = None) -> None:
    """Score ``recording_id`` with the active model; on any failure mark it (and its job) failed with the reason.

    With a job: the job is started first (queued -> running, with a lease kept by a heartbeat thread); a job
    that is not queued (finished, or running under another worker) is left alone, so a duplicate message or a
    re-queue race does nothing. If the lease is lost midway, this run stops without writing anything more.
    """
    owner = new_owner()
    if job_id is not None:
        try:
            with session_scope(ctx.session_factory) as session:
                start_job(session=session, job_id=job_id, owner=owner, lease_seconds=ctx.settings.job_lease_seconds)
        except (IllegalTransition, LookupError) as exc:  # taken, finished, or no such job
            log.info("recording %s: %s; nothing to do", recording_id, exc)
            return
    lease = JobLease(ctx.session_factory, ctx.settings, job_id, owner) if job_id is not None else None
    with observe_job("score") as job_metrics:
        _run_scoring(ctx, recording_id, job_id, owner, lease, job_metrics)


def _run_scoring(ctx: WorkerContext, recording_id: int, job_id: int | None, owner: str, lease: JobLease | None,
                 job_metrics: dict[str, str]) -> None:
    """Score under the lease; a failure lands on the recording and its job (a lost lease writes nothing)."""
    try:
        if lease is None:
            _process(ctx, recording_id, None)
        else:
            with lease:
                _process(ctx, recording_id, lease)
    except LeaseLost as exc:
        job_metrics["outcome"] = "lease_lost"
        log.warning("recording %s: %s; another worker carries on", recording_id, exc)
    except Exception as exc:  # noqa: BLE001 - every failure must land on the recording, not vanish in a thread
        job_metrics["outcome"] = "failed"
        reason = str(exc) if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}"
        log.exception("recording %s failed", recording_id)
        try:
            with session_scope(ctx.session_factory) as session:
                if job_id is not None:
                    fail_job(session=session, job_id=job_id, reason=reason, owner=owner)
                recording = session.get(Recording, recording_id)
                if recording is not None:
                    mark_failed(recording=recording, reason=reason)
        except LeaseLost:
            log.warning("recording %s: lease lost before its failure could be written", recording_id)


def _process(ctx: WorkerContext, recording_id: int, lease: JobLease | None) -> None:
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise LookupError(f"recording {recording_id} not found")
        version = get_active_model(session=session)
        if version is None:
            raise RuntimeError("no active model version: register one with `wardwatch db upgrade` + server start")
        already = session.scalar(
            select(Clip.id).where(Clip.recording_id == recording_id, Clip.model_version_id == version.id).limit(1)
        )
        if recording.status == RecordingStatus.scored and already is not None:
            log.info("recording %s already scored by model %s", recording_id, version.id)
            _succeed(session, lease, {"skipped": "already scored"})
            return
        if recording.path is None:
            raise RuntimeError(f"recording {recording_id} has no stored file")
        # Events are inserted with ON CONFLICT DO NOTHING: any this version stored before (an earlier run that
        # finished) stay as they are, with their reviews; a clinician's marks are never the run's to touch.
        run = committed_clips(session, recording_id, version.id, loaded_names=list(version.class_names))
        recording.status = RecordingStatus.ingesting
        recording.error = None
        video_path = ctx.settings.data_dir / recording.path
        started_at = recording.started_at
        duration = recording.duration or 0.0
        source_size = (recording.width or 320, recording.height or 240)
        version_id = version.id
        loaded = ctx.models.get(version)

    spec = clip_spec_for(loaded, ctx.settings)
    report = IngestReport()
    if run.starts:
        log.info("recording %s: resuming after %d committed clips", recording_id, len(run.starts))
    _score_clips(ctx, recording_id, version_id, lease, video_path, spec, started_at, duration, loaded, report, run)
    detected = detect_events(run.starts, run.ends, np.stack(run.scores) if run.scores else
                             np.zeros((0, len(loaded.class_names))), loaded.class_names, event_rule(ctx.settings))
    render, export = file_media(ctx, loaded, video_path, source_size, run)
    with session_scope(ctx.session_factory) as session:
        if lease is not None:
            lease.renew(session)  # still ours: a run that lost its lease must not store the events twice
        for found in detected:
            store_event(ctx, session, recording_id, version_id, found, run, list(loaded.class_names), started_at,
                        render, export)
        recording = session.get(Recording, recording_id)
        assert recording is not None
        recording.status = RecordingStatus.scored
        recording.clip_count = len(run.starts)
        recording.warnings = list(report.errors)
        if not run.starts:
            mark_failed(recording=recording, reason="no complete clip could be decoded from this video"
                        + (f" ({report.errors[0]})" if report.errors else ""))
            if lease is not None:
                fail_job(session=session, job_id=lease.job_id, reason=recording.error or "", owner=lease.owner)
            return
        _succeed(session, lease, {"clips": len(run.starts), "events": len(detected), "errors": report.errors})
    log.info("recording %s scored: %d clips, %d events", recording_id, len(run.starts), len(detected))


def _score_clips(ctx: WorkerContext, recording_id: int, version_id: int, lease: JobLease | None, video_path: Path,
                 spec: ClipSpec, started_at, duration: float, loaded: LoadedModel,  # type: ignore[no-untyped-def]
                 report: IngestReport, run: ScoreRun) -> None:
    """Score clips from ``len(run.starts)`` on, committing every ``commit_every`` clips; extends ``run``."""
    scorer = ObservedScorer(loaded, batch_size=ctx.settings.score_batch_size, options=inference_options(ctx.settings))
    expected = max(1.0, duration / spec.stride_seconds)
    pending: list[Clip] = []
    clips = iter_clips(video_path, spec, started_at=started_at, report=report, start_index=len(run.starts))
    with closing(scorer.score(clips)) as scored:  # a failed commit stops the decode thread at once
        for clip, probs in scored:
            pending.append(record_clip(run, clip, probs, recording_id, version_id, loaded.class_names))
            if len(pending) >= ctx.settings.commit_every:
                flush_clips(ctx, pending, lease, min(0.95, len(run.starts) / expected))
    flush_clips(ctx, pending, lease, 0.95)


def _succeed(session: Session, lease: JobLease | None, result: dict) -> None:
    if lease is not None:
        succeed_job(session=session, job_id=lease.job_id, owner=lease.owner, result=result)
