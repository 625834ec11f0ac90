"""The Celery application. Queues: ``inference`` (scoring: recordings and their segments), ``training``
(fine-tuning), ``streams`` (live streams) and ``webhooks`` (one delivery attempt per message: short,
network-bound).

The broker only carries record IDs; the database is the source of truth for job state. Redis and RabbitMQ both
work (``WARDWATCH_BROKER_URL`` = ``redis://...`` or ``amqp://...``). What each setting below is for, and why it
has this value, is said where it is set; the short version: a message may be lost (a broker restarted without
its data) or delivered twice (a redelivery after a lost connection), and neither matters, because

* a job is started by one worker only, through an atomic queued -> running in the database (a duplicate message
  finds the job running or finished and does nothing), and
* the API's job sweeper re-sends jobs that stay queued while their queue holds fewer messages than they need
  (``server.services.job_recovery``), and re-queues jobs whose worker stopped renewing its lease.
"""

from __future__ import annotations

from typing import Any

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

#: sending a task while the broker is away: a few quick tries (about a second), then the caller goes on and the
#: job stays ``queued`` in the database, where the sweeper finds it (an upload still answers 201)
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


def broker_kind(url: str | None) -> str:
    """``redis``, ``amqp`` or ``memory`` (no broker: embedded mode never sends a task)."""
    scheme = (url or "memory://").split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    return "memory"


def transport_options(settings: Settings) -> dict[str, Any]:
    """The kombu transport options for ``settings.broker_url``'s transport."""
    kind = broker_kind(settings.broker_url)
    if kind == "redis":
        return {
            # Redis has no acknowledgements of its own: kombu keeps a delivered message aside and hands it out
            # again once it was not acknowledged for this long. Tasks are acknowledged when they end (acks_late),
            # so this must be longer than the longest task and the longest webhook countdown (a countdown waits,
            # unacknowledged, in the worker), or the message runs twice (harmless, but wasted). A worker that
            # died is noticed by its job lease within seconds; this timeout is not what brings its work back.
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            # An idle pooled connection is checked before use, so the first send after a Redis restart does not
            # fail on a dead socket.
            "health_check_interval": 25,
            "socket_connect_timeout": settings.broker_connect_timeout_seconds,
            "socket_keepalive": True,
        }
    if kind == "amqp":
        return {
            # Publisher confirms: send_task returns once RabbitMQ has taken the message (written it, for a durable
            # queue and a persistent message, which are Celery's defaults), so a broker killed right after an
            # upload loses no message the API believes sent; an unconfirmed send raises and the job stays
            # queued for the sweeper.
            "confirm_publish": True,
        }
    return {}


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to ``settings.broker_url``."""
    app = Celery("wardwatch", broker=settings.broker_url or "memory://", backend=settings.result_backend)
    app.conf.update(
        # Acknowledged when the task ends, and one message per worker process at a time: a busy worker never
        # holds a second recording while another worker is idle (tasks take minutes). A task whose process
        # died is handed out again (reject_on_worker_lost); the copy finds the job still running under the dead
        # owner's lease and does nothing, and the sweeper re-queues the job once that lease expires.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The worker runs the solo pool (one task at a time, `wardwatch worker`), but Celery sizes the prefetch
        # as concurrency x multiplier with the CPU count as the default concurrency: a 2-core worker would hold a
        # second recording, unstarted, behind the one it scores.
        worker_concurrency=1,
        task_default_queue=INFERENCE_QUEUE,
        task_routes={PROCESS_RECORDING: {"queue": INFERENCE_QUEUE}, SCORE_SEGMENT: {"queue": INFERENCE_QUEUE},
                     FINETUNE: {"queue": TRAINING_QUEUE},
                     INGEST_STREAM: {"queue": STREAMS_QUEUE}, DELIVER_WEBHOOK: {"queue": WEBHOOKS_QUEUE}},
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options(settings),
        broker_connection_timeout=settings.broker_connect_timeout_seconds,
        # A worker keeps reconnecting to a broker that went away, for as long as it takes (Celery's default
        # gives up after 100 tries and the worker exits); it also waits for one that is not up yet at start.
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A task running when the broker connection drops keeps running: its job's state is in the database,
        # and its message, redelivered after the reconnect, finds the job running and does nothing. Cancelling
        # it (Celery 6's default) would throw away a scoring run half done.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # AMQP heartbeats (RabbitMQ only). The worker runs the solo pool: a task runs in the consumer's own
        # thread, which cannot answer heartbeats while it scores, so RabbitMQ would close the connection of
        # every task longer than two heartbeats. Off by default; py-amqp's TCP keepalive (about 150 s)
        # notices a broker that vanished. RabbitMQ's consumer_timeout (30 min by default) still applies to an
        # unacknowledged task: see README "Brokers" for the broker-side setting.
        broker_heartbeat=settings.broker_heartbeat_seconds,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        worker_hijack_root_logger=False,
    )
    return app


#: the app the worker process runs: `celery -A server.worker.tasks worker` (tasks register on import).
celery_app = make_celery(get_settings())
