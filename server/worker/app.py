"""The Celery application. Queues: ``inference`` (scoring: recordings and their segments), ``training``
(fine-tuning), ``streams`` (live streams) and ``webhooks`` (one delivery attempt per message: short,
network-bound).

The broker only carries record IDs; the database is the source of truth for job state. Tasks are acknowledged
late so a worker that dies mid-task leaves the message for another worker.
"""

from __future__ import annotations

from celery import Celery

from server.settings import Settings, get_settings

PROCESS_RECORDING = "wardwatch.process_recording"
SCORE_SEGMENT = "wardwatch.score_segment"
FINETUNE = "wardwatch.finetune"
INGEST_STREAM = "wardwatch.ingest_stream"
DELIVER_WEBHOOK = "wardwatch.deliver_webhook"
INFERENCE_QUEUE = "inference"
TRAINING_QUEUE = "training"
#: live streams hold a worker for as long as they run: give them their own worker processes
STREAMS_QUEUE = "streams"
WEBHOOKS_QUEUE = "webhooks"


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to ``settings.broker_url``."""
    app = Celery("wardwatch", broker=settings.broker_url or "memory://", backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=INFERENCE_QUEUE,
        task_routes={PROCESS_RECORDING: {"queue": INFERENCE_QUEUE}, SCORE_SEGMENT: {"queue": INFERENCE_QUEUE},
                     FINETUNE: {"queue": TRAINING_QUEUE},
                     INGEST_STREAM: {"queue": STREAMS_QUEUE}, DELIVER_WEBHOOK: {"queue": WEBHOOKS_QUEUE}},
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


#: the app the worker process runs: `celery -A server.worker.tasks worker` (tasks register on import).
celery_app = make_celery(get_settings())
