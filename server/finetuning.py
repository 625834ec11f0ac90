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
from server.db.base import utcnow
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, ModelState, ModelVersion
from server.pipeline import WorkerContext
from server.services.models import get_active_model, register_checkpoint
from server.training_curves import TrainingCurves
from server.training_data import build_finetune_data

log = logging.getLogger(__name__)
FINETUNE_KIND = "finetune"
#: how often (seconds) progress is written and the cancel flag is read: cheap for the database, quick to stop.
POLL_SECONDS = 1.0


class _JobLink:
    """Throttled progress writes and cancel checks for one job; the curves see every report, throttled or not."""

    def __init__(self, ctx: WorkerContext, job_id: int) -> None:
        self.ctx, self.job_id = ctx, job_id
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
            job = session.get(Job, self.job_id)
            if job is not None:
                job.progress = min(0.99, p.global_step / total)
                job.result = {**(job.result or {}), "progress": state, "curves": self.curves.as_dict()}

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= POLL_SECONDS:
            self._last_check = now
            with session_scope(self.ctx.session_factory) as session:
                job = session.get(Job, self.job_id)
                self._cancelled = job is None or job.status == JobStatus.cancelled
        return self._cancelled


def run_finetune(ctx: WorkerContext, job_id: int) -> None:
    """Run fine-tune job ``job_id`` (idempotent: a finished or cancelled job is left alone)."""
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            log.info("fine-tune job %s is %s: nothing to do", job_id, job.status if job else "missing")
            return
        job.status, job.started_at = JobStatus.running, utcnow()
        params: dict[str, Any] = dict(job.params)
        base = session.get(ModelVersion, params["base_model_id"])
        if base is None:
            _finish(ctx, job_id, JobStatus.failed, error=f"model version {params['base_model_id']} not found")
            return
        base_path, base_id = base.checkpoint_path, base.id
        active = get_active_model(session=session)
        # The admin may fine-tune an older version: compare the candidate with what serves today as well.
        others = {"active": active.checkpoint_path} if active is not None and active.id != base_id else None
        active_id = active.id if active is not None else None
    out_path = candidate_path(ctx.settings.data_dir, job_id)
    link = _JobLink(ctx, job_id)
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
            pretrained=params.get("pretrained"),
        )
        if "others" in result.comparison:
            result.comparison["others"]["active"]["model_version_id"] = active_id
    except TrainingCancelled:
        out_path.unlink(missing_ok=True)
        _finish(ctx, job_id, JobStatus.cancelled, error="cancelled by an administrator")
        return
    except Exception as exc:  # noqa: BLE001 - the reason must land on the job
        log.exception("fine-tune job %s failed", job_id)
        out_path.unlink(missing_ok=True)
        _finish(ctx, job_id, JobStatus.failed, error=f"{type(exc).__name__}: {exc}")
        return
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        loaded = load_checkpoint(result.path, device="cpu")
        version = register_checkpoint(session=session, loaded=loaded, activate=False,
                                      created_by=job.created_by if job else None)
        version.name = f"finetune-{job_id}"
        version.parent_id = base_id
        version.state = ModelState.candidate
        version.metrics = {**result.metrics, "comparison": result.comparison, "data": data.summary()}
        session.flush()
        summary = {"model_version_id": version.id, "comparison": result.comparison, "data": data.summary(),
                   "history": result.history}
    _finish(ctx, job_id, JobStatus.succeeded, result=summary)


def _finish(ctx: WorkerContext, job_id: int, status: JobStatus, *, result: dict | None = None,
            error: str | None = None) -> None:
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        if job.status == JobStatus.cancelled and status != JobStatus.cancelled:
            status = JobStatus.cancelled  # cancelled while finishing: keep the administrator's word
        job.status, job.finished_at, job.error = status, utcnow(), error
        if result is not None:
            job.result = {**(job.result or {}), **result}
        if status == JobStatus.succeeded:
            job.progress = 1.0


def candidate_path(data_dir: Path, job_id: int) -> Path:
    return data_dir / "models" / f"finetune-{job_id}.pt"
