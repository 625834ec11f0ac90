"""The webhook outbox: delivery rows written in the caller's transaction, sent once it has committed.

``queue_event_webhooks`` is the one call the event writers make (``pipeline.store_event`` for
``event.created``, ``services.events.review_event`` for ``event.reviewed``). It adds one pending delivery per
active subscription to the session the event or review is written in, so both commit together or not at all.
The ids are remembered on the session; ``send_after_commit`` hooks a session factory so that, after a commit,
they are handed to the dispatcher (never before: a worker must find the row). If the process dies between the
commit and the hand-over, or the broker is down, the sweeper (``server.webhook_sweeper``) sends them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.tables import Event
from server.db.webhook_tables import DeliveryStatus, WebhookDelivery, WebhookEventType, WebhookSubscription
from server.event_view import event_public

log = logging.getLogger(__name__)
_QUEUED = "wardwatch.webhook_deliveries"  # session.info key: delivery ids waiting for the commit


def queue_event_webhooks(*, session: Session, event: Event, event_type: WebhookEventType) -> list[WebhookDelivery]:
    """One pending delivery of ``event`` per active subscription to ``event_type``, in the caller's transaction.

    The payload's ``data`` is the event as the API shows it now (after the review, for ``event.reviewed``).
    """
    subscriptions = [s for s in session.scalars(select(WebhookSubscription).where(WebhookSubscription.active))
                     if event_type.value in s.events]
    if not subscriptions:
        return []
    session.flush()
    session.refresh(event, ["agreement"])  # kept by a trigger when the pipeline's explanations were flushed
    data = event_public(event).model_dump(mode="json")
    now = utcnow()
    rows = [WebhookDelivery(uuid=str(uuid.uuid4()), subscription_id=s.id, event_type=event_type, event_id=event.id,
                            data=data, status=DeliveryStatus.pending, next_attempt_at=now, created_at=now)
            for s in subscriptions]
    return _queue(session, rows)


def queue_retry(*, session: Session, failed: WebhookDelivery) -> WebhookDelivery:
    """A new delivery with the same event data as ``failed`` (a new id: the receiver never accepted the old)."""
    now = utcnow()
    row = WebhookDelivery(uuid=str(uuid.uuid4()), subscription_id=failed.subscription_id,
                          event_type=failed.event_type, event_id=failed.event_id, data=failed.data,
                          status=DeliveryStatus.pending, next_attempt_at=now, created_at=now, retry_of_id=failed.id)
    return _queue(session, [row])[0]


def _queue(session: Session, rows: list[WebhookDelivery]) -> list[WebhookDelivery]:
    session.add_all(rows)
    session.flush()
    session.info.setdefault(_QUEUED, []).extend(row.id for row in rows)
    return rows


def send_after_commit(factory: sessionmaker[Session], send: Callable[[int], object]) -> None:
    """After each commit of a session from ``factory``, call ``send(delivery_id)`` for the deliveries it
    queued; a rollback forgets them. A failing ``send`` is logged, not raised: the commit has happened, and
    the sweeper picks the delivery up."""

    @sa_event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        for delivery_id in session.info.pop(_QUEUED, ()):
            try:
                send(delivery_id)
            except Exception as exc:  # noqa: BLE001 - broker down: the sweeper sends it later
                log.warning("webhook delivery %s not handed over (%s: %s); the sweeper will send it",
                            delivery_id, type(exc).__name__, exc)

    @sa_event.listens_for(factory, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(_QUEUED, None)
