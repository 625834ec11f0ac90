"""The ``wardwatch.finetune`` task body: reviewed + unlabelled clips -> ATCON fine-tuning -> candidate model.

Progress (epoch, step, loss, validation F1) goes to the job row; cancelling is a status change on that row,
seen by the trainer between steps. A cancelled or failed job leaves no candidate file and no model version.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from model.training.finetune import TrainingCancelled, finetune
from model.training.loop import TrainProgress
from model.weights import load_checkpoint
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, ModelVersion
from server.job_lease import JobLease
from server.pipeline import WorkerContext
from server.services.jobs import (
    IllegalTransition,
    LeaseLost,
    fail_job,
    is_cancelled,
    new_owner,
    settle_cancelled,
    start_job,
    succeed_job,
)
from server.services.models import DuplicateCheckpoint, get_active_model, register_candidate
from server.training_curves import TrainingCurves
from server.training_data import build_finetune_data

log = logging.getLogger(__name__)
#: how often (seconds) progress is written and the cancel flag is read: cheap for the database, quick to stop.
POLL_SECONDS = 1.0


class _JobLink:
    """Throttled progress writes and cancel checks for one job; the curves see every report, throttled or not."""

    def __init__(self, ctx: WorkerContext, job_id: int, lease: JobLease) -> None:
        self.ctx, self.job_id, self.lease = ctx, job_id, lease
        self.curves = TrainingCurves()
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancelled = False

    def progress(self, p: TrainProgress) -> None:
        self.curves.add(p)
        now = time.monotonic()
        if p.phase != "epoch" and now - self._last_write < POLL_SECONDS:
            return
        self._last_write = now
        total = max(1, p.epochs * max(1, p.steps_per_epoch))
        state = {"epoch": p.epoch + 1, "epochs": p.epochs, "step": p.global_step, "loss": p.loss,  # epoch 1-based
                 "val_macro_f1": p.val_macro_f1}
        with session_scope(self.ctx.session_factory) as session:
            self.lease.renew(session, progress=min(0.99, p.global_step / total),
                             result={"progress": state, "curves": self.curves.as_dict()})

    def should_cancel(self) -> bool:
        """Cancelled by an administrator, or the lease lost (another worker has the job now): stop either way."""
        now = time.monotonic()
        if now - self._last_check >= POLL_SECONDS:
            self._last_check = now
            with session_scope(self.ctx.session_factory) as session:
                self._cancelled = is_cancelled(session=session, job_id=self.job_id)
        return self._cancelled or self.lease.lost.is_set()


def run_finetune(ctx: WorkerContext, job_id: int) -> None:
    """Run fine-tune job ``job_id`` (idempotent: a job that is not queued -- finished, cancelled, running under
    another worker -- is left alone). The job is leased for the run; a re-queued one resumes from its last
    epoch state in ``data_dir/jobs/<id>``."""
    owner = new_owner()
    try:
        with session_scope(ctx.session_factory) as session:
            job = start_job(session=session, job_id=job_id, owner=owner, lease_seconds=ctx.settings.job_lease_seconds)
            params: dict[str, Any] = dict(job.params)
    except (IllegalTransition, LookupError) as exc:
        log.info("fine-tune job %s: %s; nothing to do", job_id, exc)
        return
    with JobLease(ctx.session_factory, ctx.settings, job_id, owner) as lease:
        try:
            _run(ctx, job_id, params, lease)
        except LeaseLost as exc:
            log.warning("fine-tune job %s: %s; another worker carries on", job_id, exc)


def _run(ctx: WorkerContext, job_id: int, params: dict[str, Any], lease: JobLease) -> None:
    with session_scope(ctx.session_factory) as session:
        base = session.get(ModelVersion, params["base_model_id"])
        if base is None:
            fail_job(session=session, job_id=job_id, reason=f"model version {params['base_model_id']} not found",
                     owner=lease.owner)
            return
        base_path, base_id = base.checkpoint_path, base.id
        active = get_active_model(session=session)
        # The admin may fine-tune an older version: compare the candidate with what serves today as well.
        others = {"active": active.checkpoint_path} if active is not None and active.id != base_id else None
        active_id = active.id if active is not None else None
    out_path = candidate_path(ctx.settings.data_dir, job_id)
    link = _JobLink(ctx, job_id, lease)
    try:
        with session_scope(ctx.session_factory) as session:
            base = session.get(ModelVersion, base_id)
            assert base is not None
            data = build_finetune_data(
                session=session, data_dir=ctx.settings.data_dir, base=base, mode=params["mode"],
                recording_ids=params.get("recording_ids"), max_unlabelled=params.get("max_unlabelled", 2000),
                validation_fraction=params.get("validation_fraction", 0.25), seed=params.get("seed", 0),
            )
        log.info("fine-tune job %s: %s", job_id, data.summary())
        result = finetune(
            base_path, out_path=out_path, labelled=data.labelled or None, unlabelled=data.unlabelled or None,
            validation=data.validation or None, mode=params["mode"],
            # a step-loss point every step unless asked otherwise: the curves decimate, the writes are throttled
            hyperparameters={"log_every": 1, **params.get("hyperparameters", {})}, on_progress=link.progress,
            should_cancel=link.should_cancel, device=ctx.settings.device,
            work_dir=ctx.settings.data_dir / "jobs" / str(job_id), also_compare=others,
            pretrained=params.get("pretrained"), provenance={"job_id": job_id, "base_model_version_id": base_id},
        )
        if "others" in result.comparison:
            result.comparison["others"]["active"]["model_version_id"] = active_id
    except TrainingCancelled:
        # stopped because the job went to another worker: that worker finishes it, and the candidate file at
        # out_path may already be its registered model's (so it is left alone)
        lease.check()
        out_path.unlink(missing_ok=True)
        _finish(ctx, job_id, lease, JobStatus.cancelled, error="cancelled by an administrator")
        return
    except LeaseLost:
        raise  # the job is another worker's now: so may be the file at out_path
    except Exception as exc:  # noqa: BLE001 - the reason must land on the job
        log.exception("fine-tune job %s failed", job_id)
        out_path.unlink(missing_ok=True)
        _finish(ctx, job_id, lease, JobStatus.failed, error=f"{type(exc).__name__}: {exc}")
        return
    try:
        with session_scope(ctx.session_factory) as session:
            lease.renew(session)  # still ours: a run that lost its lease registers no model
            job = session.get(Job, job_id)
            loaded = load_checkpoint(result.path, device="cpu")
            version = register_candidate(
                session=session, loaded=loaded, name=f"finetune-{job_id}", parent_id=base_id,
                metrics={**result.metrics, "comparison": result.comparison, "data": data.summary()},
                created_by=job.created_by if job else None)
            summary = {"model_version_id": version.id, "comparison": result.comparison, "data": data.summary(),
                       "history": result.history}
            succeed_job(session=session, job_id=job_id, owner=lease.owner, result=summary)
    except DuplicateCheckpoint as exc:  # the same bytes as a registered version: that version is left as it is
        out_path.unlink(missing_ok=True)
        _finish(ctx, job_id, lease, JobStatus.failed, error=str(exc))


def _finish(ctx: WorkerContext, job_id: int, lease: JobLease, status: JobStatus, *, error: str) -> None:
    """Close the run as cancelled or failed (a job cancelled meanwhile keeps the administrator's word)."""
    with session_scope(ctx.session_factory) as session:
        if status == JobStatus.cancelled:
            settle_cancelled(session=session, job_id=job_id, owner=lease.owner, reason=error)
        else:
            fail_job(session=session, job_id=job_id, reason=error, owner=lease.owner)


def candidate_path(data_dir: Path, job_id: int) -> Path:
    return data_dir / "models" / f"finetune-{job_id}.pt"
