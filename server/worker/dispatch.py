"""How the API hands work to workers: a thread pool in embedded mode, Celery when a broker is configured."""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from server.finetuning import run_finetune
from server.pipeline import WorkerContext
from server.services.webhook_delivery import attempt_delivery
from server.settings import Settings
from server.streaming import refuse_stream, run_stream
from server.worker.app import (
    DELIVER_WEBHOOK,
    FINETUNE,
    INFERENCE_QUEUE,
    INGEST_STREAM,
    PROCESS_RECORDING,
    STREAMS_QUEUE,
    TRAINING_QUEUE,
    WEBHOOKS_QUEUE,
    make_celery,
)
from server.worker.request_ids import task_headers
from server.worker.scoring import process_recording

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        """Queue scoring of a committed recording; returns a task id where there is one."""

    def finetune(self, job_id: int) -> str | None:
        """Queue a committed fine-tune job on the training queue."""

    def stream(self, recording_id: int, job_id: int) -> str | None:
        """Start reading a live stream (a long-running task)."""

    def deliver_webhook(self, delivery_id: int, delay: float = 0.0) -> None:
        """Make an attempt at a committed webhook delivery, ``delay`` seconds from now."""

    def shutdown(self) -> None: ...


class EmbeddedDispatcher:
    """Runs the task functions in this process, one recording at a time by default (CPU-bound)."""

    #: how long a new stream waits for a reader slot that a finishing stream is about to give back
    STREAM_SLOT_WAIT = 5.0

    def __init__(self, context: WorkerContext, workers: int = 1, max_streams: int = 8,
                 webhook_workers: int = 4) -> None:
        self._context = context
        # Live streams run until stopped, so each holds a thread of its own, but never more than max_streams:
        # the API admits streams by counting live stream jobs, and this is the hard bound on threads behind it.
        self._stream_slots = threading.BoundedSemaphore(max_streams)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wardwatch-worker")
        # Training gets its own thread so a long fine-tune never holds up scoring (the `training` queue).
        self._training = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wardwatch-training")
        # Webhooks wait on the network, not the CPU: their own threads, so scoring never holds them up. Each
        # attempt ends by its deadline (webhook_delivery.attempt_deadline_seconds), so a slow receiver holds a
        # thread for seconds, not for as long as it likes.
        self._webhooks = ThreadPoolExecutor(max_workers=webhook_workers, thread_name_prefix="wardwatch-webhooks")
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self.futures: list[Future[None]] = []

    def _track(self, future: Future[None]) -> None:
        self.futures = [f for f in self.futures if not f.done()] + [future]

    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        # the task thread runs in a copy of the caller's context: its log lines carry the request ID
        self._track(self._pool.submit(contextvars.copy_context().run, process_recording, self._context,
                                      recording_id, job_id))
        return None

    def finetune(self, job_id: int) -> str | None:
        self._track(self._training.submit(contextvars.copy_context().run, run_finetune, self._context, job_id))
        return None

    def stream(self, recording_id: int, job_id: int) -> str | None:
        # One thread per live stream (it runs until stopped, so it must not hold a scoring pool slot), from a
        # bounded set of slots. The slot is free again once the stream's outcome is committed.
        if not self._stream_slots.acquire(timeout=self.STREAM_SLOT_WAIT):
            log.warning("no stream reader free for recording %s: refused", recording_id)
            refuse_stream(self._context, recording_id, job_id, "no stream reader free (WARDWATCH_MAX_STREAMS)")
            return None
        threading.Thread(target=self._run_stream, args=(recording_id, job_id), daemon=True,
                         name=f"wardwatch-stream-{recording_id}").start()
        return None

    def _run_stream(self, recording_id: int, job_id: int) -> None:
        try:
            run_stream(self._context, recording_id, job_id)
        except Exception:  # the job keeps its reason; the slot must come back whatever happened
            log.exception("stream reader of recording %s crashed", recording_id)
        finally:
            self._stream_slots.release()

    def deliver_webhook(self, delivery_id: int, delay: float = 0.0) -> None:
        if delay > 0:  # a retry: a timer, not a sleeping pool thread (the sweeper covers a restart meanwhile)
            timer = threading.Timer(delay, self._fire, args=(delivery_id,))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
            return
        try:
            self._webhooks.submit(contextvars.copy_context().run, self._deliver, delivery_id)
        except RuntimeError:  # shut down: the sweeper of the next start sends it
            log.info("webhook delivery %s left to the next start", delivery_id)

    def _fire(self, delivery_id: int) -> None:
        with self._lock:
            self._timers.discard(threading.current_thread())  # type: ignore[arg-type]  # the Timer itself
        self.deliver_webhook(delivery_id)

    def _deliver(self, delivery_id: int) -> None:
        try:
            delay = attempt_delivery(self._context.session_factory, self._context.settings, delivery_id)
        except Exception:  # noqa: BLE001 - a database hiccup: the sweeper retries once the claim's lease runs out
            log.exception("webhook delivery %s: attempt failed to run", delivery_id)
            return
        if delay is not None:
            self.deliver_webhook(delivery_id, delay)

    def wait(self, timeout: float | None = None) -> None:
        """Block until queued work is done (tests and `wardwatch demo`)."""
        for future in list(self.futures):
            future.result(timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._training.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
        self._webhooks.shutdown(wait=False, cancel_futures=True)


class CeleryDispatcher:
    """Sends task names and IDs to the broker; the API process never imports the task bodies."""

    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings)

    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        result = self._celery.send_task(PROCESS_RECORDING, args=[recording_id, job_id], queue=INFERENCE_QUEUE,
                                        headers=task_headers())
        return str(result.id)

    def finetune(self, job_id: int) -> str | None:
        return str(self._celery.send_task(FINETUNE, args=[job_id], queue=TRAINING_QUEUE, headers=task_headers()).id)

    def stream(self, recording_id: int, job_id: int) -> str | None:
        return str(self._celery.send_task(INGEST_STREAM, args=[recording_id, job_id], queue=STREAMS_QUEUE,
                                          headers=task_headers()).id)

    def deliver_webhook(self, delivery_id: int, delay: float = 0.0) -> None:
        self._celery.send_task(DELIVER_WEBHOOK, args=[delivery_id], queue=WEBHOOKS_QUEUE, countdown=delay or None,
                               headers=task_headers())

    def shutdown(self) -> None:
        self._celery.close()


def make_dispatcher(settings: Settings, context: WorkerContext) -> Dispatcher:
    if settings.embedded:
        log.info("embedded mode: tasks run inside this process")
        return EmbeddedDispatcher(context, workers=settings.embedded_workers, max_streams=settings.max_streams,
                                  webhook_workers=settings.webhook_workers)
    log.info("broker mode: tasks go to %s", settings.broker_url)
    return CeleryDispatcher(settings)
