"""Celery tasks. Each takes record IDs and delegates to the same functions the embedded mode runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from celery import Task

from server.bootstrap import make_worker_context
from server.pipeline import WorkerContext
from server.services.webhook_delivery import attempt_delivery
from server.services.webhook_outbox import send_after_commit
from server.settings import get_settings
from server.worker.app import (
    DELIVER_WEBHOOK,
    FINETUNE,
    INFERENCE_QUEUE,
    INGEST_STREAM,
    PROCESS_RECORDING,
    SCORE_SEGMENT,
    WEBHOOKS_QUEUE,
    celery_app,
)
from server.worker.finetuning import run_finetune
from server.worker.request_ids import task_headers  # also connects the task_prerun/postrun hooks
from server.worker.retry import RetryLater, give_up, retry_delay
from server.worker.scoring import process_recording, run_segment
from server.worker.streaming import run_stream

_CONTEXT_LOCK = threading.Lock()


@cache
def _context() -> WorkerContext:
    # Built lazily inside the worker process: its own engine and its own loaded model (STYLE.md #10); once, also
    # when the first tasks of a thread pool arrive together.
    with _CONTEXT_LOCK:
        return _make_context()


@cache
def _make_context() -> WorkerContext:
    context = make_worker_context(get_settings())
    # Events this worker stores queue webhook deliveries: hand them to the webhooks queue once committed.
    send_after_commit(context.session_factory, _queue_delivery)
    # A recording's segments go to the inference queue, where any worker (this one too) takes them.
    context.dispatch_segment = _queue_segment
    return context


def _queue_segment(job_id: int) -> None:
    score_segment_task.apply_async(args=[job_id], queue=INFERENCE_QUEUE, headers=task_headers())


def _retrying(task: Task, body: Callable[..., None], *args: Any) -> None:
    """Run a scoring task body; after a transient error Celery sends the task again with an exponential backoff
    (``task.retry``: a new message, this one acknowledged), at most ``task_max_retries`` times, then the job fails."""
    try:
        body(*args)
    except RetryLater as exc:
        settings = _context().settings
        retries = int(task.request.retries or 0)
        if retries >= settings.task_max_retries:
            give_up(_context().session_factory, exc.job_id, exc.reason, retries)
            return
        raise task.retry(countdown=retry_delay(retries, settings), max_retries=settings.task_max_retries + 1,
                         exc=exc) from exc


def _queue_delivery(delivery_id: int, delay: float = 0.0) -> None:
    deliver_webhook_task.apply_async(args=[delivery_id], queue=WEBHOOKS_QUEUE, countdown=delay or None,
                                     headers=task_headers())  # the request that started it all, passed on


@celery_app.task(name=PROCESS_RECORDING, bind=True, acks_late=True)
def process_recording_task(self: Task, recording_id: int, job_id: int | None = None) -> None:
    """Score one recording, in one piece or by handing out its segments (idempotent)."""
    _retrying(self, process_recording, _context(), recording_id, job_id)


@celery_app.task(name=SCORE_SEGMENT, bind=True, acks_late=True)
def score_segment_task(self: Task, job_id: int) -> None:
    """Score one segment job of a recording; the last one to end finalises the recording (idempotent)."""
    _retrying(self, run_segment, _context(), job_id)


@celery_app.task(name=FINETUNE, acks_late=True)
def finetune_task(job_id: int) -> None:
    """Fine-tune a model version (ATCON by default) into a candidate (idempotent per job)."""
    run_finetune(_context(), job_id)


@celery_app.task(name=INGEST_STREAM, acks_late=True)
def ingest_stream_task(recording_id: int, job_id: int) -> None:
    """Read, score and explain a live stream until it is stopped through the API."""
    run_stream(_context(), recording_id, job_id)


@celery_app.task(name=DELIVER_WEBHOOK, acks_late=True)
def deliver_webhook_task(delivery_id: int) -> None:
    """One attempt at a webhook delivery (a duplicate message finds it claimed or done and does nothing); the
    next attempt, if any, is queued with its backoff as the countdown."""
    context = _context()
    delay = attempt_delivery(context.session_factory, context.settings, delivery_id)
    if delay is not None:
        _queue_delivery(delivery_id, delay)
