"""Celery tasks. Each takes record IDs and delegates to the same functions the embedded mode runs."""

from __future__ import annotations

from functools import cache

from server.bootstrap import make_worker_context
from server.finetuning import run_finetune
from server.pipeline import WorkerContext, process_recording
from server.settings import get_settings
from server.streaming import run_stream
from server.worker.app import FINETUNE, INGEST_STREAM, PROCESS_RECORDING, celery_app


@cache
def _context() -> WorkerContext:
    # Built lazily inside the worker process: its own engine and its own loaded model (STYLE.md #10).
    return make_worker_context(get_settings())


@celery_app.task(name=PROCESS_RECORDING, acks_late=True)
def process_recording_task(recording_id: int, job_id: int | None = None) -> None:
    """Score one recording (idempotent)."""
    process_recording(_context(), recording_id, job_id)


@celery_app.task(name=FINETUNE, acks_late=True)
def finetune_task(job_id: int) -> None:
    """Fine-tune a model version (ATCON by default) into a candidate (idempotent per job)."""
    run_finetune(_context(), job_id)


@celery_app.task(name=INGEST_STREAM, acks_late=True)
def ingest_stream_task(recording_id: int, job_id: int) -> None:
    """Read, score and explain a live stream until it is stopped through the API."""
    run_stream(_context(), recording_id, job_id)
