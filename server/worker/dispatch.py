"""How the API hands work to workers: a thread pool in embedded mode, Celery when a broker is configured."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from amqp.exceptions import MessageNacked
from kombu.exceptions import OperationalError

from server.pipeline import WorkerContext
from server.services.webhook_delivery import attempt_delivery
from server.settings import Settings
from server.worker.app import (
    DELIVER_WEBHOOK,
    FINETUNE,
    INFERENCE_QUEUE,
    INGEST_STREAM,
    PROCESS_RECORDING,
    SCORE_SEGMENT,
    STREAMS_QUEUE,
    TRAINING_QUEUE,
    WEBHOOKS_QUEUE,
    broker_kind,
    make_celery,
)
from server.worker.finetuning import run_finetune
from server.worker.request_ids import task_headers
from server.worker.retry import RetryLater, give_up, retry_delay
from server.worker.scoring import process_recording, run_segment
from server.worker.streaming import refuse_stream, run_stream

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        """Queue scoring of a committed recording; returns a task id where there is one."""

    def score_segment(self, job_id: int) -> str | None:
        """Queue a committed segment job (a part of a recording's scoring) on the inference queue."""

    def finetune(self, job_id: int) -> str | None:
        """Queue a committed fine-tune job on the training queue."""

    def stream(self, recording_id: int, job_id: int) -> str | None:
        """Start reading a live stream (a long-running task)."""

    def deliver_webhook(self, delivery_id: int, delay: float = 0.0) -> None:
        """Make an attempt at a committed webhook delivery, ``delay`` seconds from now."""

    def shutdown(self) -> None: ...


class EmbeddedDispatcher:
    """Runs the task functions in this process, one recording or segment at a time by default (CPU-bound);
    with ``workers`` > 1 segments run side by side and share the process's batcher."""

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
        self._retries: set[threading.Timer] = set()  # scoring tasks waiting out a transient error's backoff
        self._lock = threading.Lock()
        self.futures: list[Future[None]] = []
        context.dispatch_segment = self.score_segment  # a recording's segments go to this pool

    def _track(self, future: Future[None]) -> None:
        with self._lock:
            self.futures = [f for f in self.futures if not f.done()] + [future]

    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        self._run_scoring(process_recording, (self._context, recording_id, job_id), retries=0)
        return None

    def score_segment(self, job_id: int) -> str | None:
        self._run_scoring(run_segment, (self._context, job_id), retries=0)
        return None

    def _run_scoring(self, body: Callable[..., None], args: tuple[Any, ...], retries: int) -> None:
        # the task thread runs in a copy of the caller's context: its log lines carry the request ID
        try:
            self._track(self._pool.submit(contextvars.copy_context().run, self._retrying, body, args, retries))
        except RuntimeError:  # shut down: start-up recovery runs it next time
            log.info("%s%s left to the next start", body.__name__, args[1:])

    def _retrying(self, body: Callable[..., None], args: tuple[Any, ...], retries: int) -> None:
        """Run a scoring task body; after a transient error, again after a backoff (a timer, not a sleeping pool
        thread), at most ``task_max_retries`` times."""
        try:
            body(*args)
        except RetryLater as exc:
            settings = self._context.settings
            if retries >= settings.task_max_retries:
                give_up(self._context.session_factory, exc.job_id, exc.reason, retries)
                return
            delay = retry_delay(retries, settings)
            log.warning("%s%s: %s; retry %d in %.1f s", body.__name__, args[1:], exc.reason, retries + 1, delay)
            timer = threading.Timer(delay, self._retry, args=(body, args, retries + 1))
            timer.daemon = True
            with self._lock:
                self._retries.add(timer)
            timer.start()

    def _retry(self, body: Callable[..., None], args: tuple[Any, ...], retries: int) -> None:
        try:
            self._run_scoring(body, args, retries)
        finally:  # only once it is tracked as a future again, so wait() never sees neither
            with self._lock:
                self._retries.discard(threading.current_thread())  # type: ignore[arg-type]  # the Timer itself

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
        """Block until queued work is done, including the segments and retries it queued meanwhile (tests and
        `wardwatch demo`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self.futures if not f.done()]
                retrying = bool(self._retries)
            if not pending and not retrying:
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                raise TimeoutError("queued work did not finish in time")
            for future in pending:
                future.result(timeout=left)
            if retrying and not pending:
                time.sleep(0.05)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._training.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for timer in (*self._timers, *self._retries):
                timer.cancel()
            self._timers.clear()
            self._retries.clear()
        self._webhooks.shutdown(wait=False, cancel_futures=True)


class CeleryDispatcher:
    """Sends task names and IDs to the broker; the API process never imports the task bodies.

    A job whose message cannot be sent (the broker is down) is not an error for the caller: the job is committed
    as ``queued`` and the job sweeper sends it once the broker is back (``server.services.job_recovery``), so
    an upload still answers 201. Such a send returns None (no task id)."""

    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings)

    def _send_job(self, name: str, args: list[int | None], queue: str) -> str | None:
        try:
            return str(self._celery.send_task(name, args=args, queue=queue, headers=task_headers()).id)
        except (OperationalError, OSError, MessageNacked) as exc:  # unreachable, or refused (publisher confirms)
            log.warning("cannot reach the broker (%s): %s %s stays queued for the job sweeper", type(exc).__name__,
                        name, args)
            return None

    def process_recording(self, recording_id: int, job_id: int | None) -> str | None:
        return self._send_job(PROCESS_RECORDING, [recording_id, job_id], INFERENCE_QUEUE)

    def score_segment(self, job_id: int) -> str | None:
        """Raises when the broker is away: a recording's scoring task that hands out its segments retries then (the
        sweeper, which also sends segments, catches it per job)."""
        return str(self._celery.send_task(SCORE_SEGMENT, args=[job_id], queue=INFERENCE_QUEUE,
                                          headers=task_headers()).id)

    def finetune(self, job_id: int) -> str | None:
        return self._send_job(FINETUNE, [job_id], TRAINING_QUEUE)

    def stream(self, recording_id: int, job_id: int) -> str | None:
        return self._send_job(INGEST_STREAM, [recording_id, job_id], STREAMS_QUEUE)

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
    log.info("broker mode: tasks go to the %s broker", broker_kind(settings.broker_url))  # the URL may hold a password
    return CeleryDispatcher(settings)
