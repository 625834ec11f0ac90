"""The broker as readiness and metrics see it: can we connect, and how many messages wait in each queue.

Both go through kombu (Celery's transport layer), so Redis and RabbitMQ are asked the same way: a passive
``queue_declare`` answers a queue's message count on either, without creating the queue.
"""

from __future__ import annotations

from kombu import Connection

from server.worker.app import INFERENCE_QUEUE, STREAMS_QUEUE, TRAINING_QUEUE, WEBHOOKS_QUEUE

QUEUES = (INFERENCE_QUEUE, TRAINING_QUEUE, STREAMS_QUEUE, WEBHOOKS_QUEUE)


def ping_broker(url: str, timeout: float = 2.0) -> None:
    """Raises when the broker at ``url`` cannot be reached within about ``timeout`` seconds."""
    with Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout}) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        connection.default_channel  # noqa: B018 - opening a channel is what proves the broker answers


def queue_depths(url: str, timeout: float = 2.0) -> dict[str, int]:
    """Messages waiting per queue; a queue that does not exist yet has none."""
    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout}) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        for queue in QUEUES:
            channel = connection.channel()  # a failed passive declare closes an AMQP channel: one per queue
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # noqa: BLE001 - not declared yet (no worker has started): nothing waits in it
                depths[queue] = 0
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - the broker closed it already
                    pass
    return depths
