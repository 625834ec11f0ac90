"""Webhook subscriptions (admin): create (the secret shown once), list, deactivate; the delivery log; retry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from server.db.base import utcnow
from server.db.webhook_tables import DeliveryStatus, WebhookDelivery, WebhookEventType, WebhookSubscription
from server.security.secret_box import SecretBox
from server.services.errors import ConflictError, NotFoundError
from server.services.pagination import id_page
from server.services.webhook_outbox import queue_retry
from server.services.webhook_signing import new_secret
from server.services.webhook_targets import check_target


def create_subscription(*, session: Session, box: SecretBox, url: str, events: Iterable[WebhookEventType],
                        allow_local: bool, description: str | None = None,
                        created_by_user_id: int | None = None) -> tuple[WebhookSubscription, str]:
    """A new active subscription; returns (row, the signing secret). The row keeps the secret encrypted.
    An unusable URL raises :class:`UnsafeTarget` (a ValueError)."""
    check_target(url, allow_local=allow_local)
    wanted = sorted({WebhookEventType(e).value for e in events})
    if not wanted:
        raise ValueError("a subscription needs at least one event type")
    secret = new_secret()
    row = WebhookSubscription(url=url, events=wanted, description=description, secret_encrypted=box.encrypt(secret),
                              active=True, created_by_user_id=created_by_user_id)
    session.add(row)
    session.flush()
    return row, secret


def reencrypt_webhook_secrets(*, session: Session, box: SecretBox) -> int:
    """After a key rotation: every subscription's signing secret (deactivated ones too: a retry may need them
    no more, but an old key must not be kept for them) re-encrypted with the first key. Returns how many were
    rewritten; raises ``SecretUnreadable`` when one opens with none of the keys."""
    count = 0
    for row in session.scalars(select(WebhookSubscription)).all():
        rotated = box.rotate(row.secret_encrypted)
        if rotated != row.secret_encrypted:
            row.secret_encrypted = rotated
            count += 1
    session.flush()
    return count


def list_subscriptions(*, session: Session) -> Sequence[WebhookSubscription]:
    return session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)).all()


def get_subscription(*, session: Session, subscription_id: int) -> WebhookSubscription:
    """The subscription, or NotFoundError."""
    row = session.get(WebhookSubscription, subscription_id)
    if row is None:
        raise NotFoundError("webhook", subscription_id)
    return row


def deactivate_subscription(*, session: Session, subscription_id: int) -> WebhookSubscription:
    """Stop sending (idempotent). Pending deliveries are failed now: they would go to an endpoint that the
    admin has just said is no longer wanted."""
    row = get_subscription(session=session, subscription_id=subscription_id)
    if row.active:
        row.active = False
        row.deactivated_at = utcnow()
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.subscription_id == row.id, WebhookDelivery.status == DeliveryStatus.pending)
            .values(status=DeliveryStatus.failed, next_attempt_at=None, last_error="the subscription was deactivated")
            .execution_options(synchronize_session=False)
        )
        session.flush()
    return row


def list_deliveries(*, session: Session, subscription_id: int, limit: int, cursor: int | None = None,
                    status: DeliveryStatus | None = None) -> tuple[Sequence[WebhookDelivery], int, int | None]:
    """The delivery log of a subscription, newest first, with each delivery's attempts; ``cursor`` is the last
    id of the previous page. Returns (page, total matching, next cursor or None)."""
    get_subscription(session=session, subscription_id=subscription_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page, next_cursor = id_page(session, query.options(selectinload(WebhookDelivery.attempt_log)),
                                id_column=WebhookDelivery.id, limit=limit, cursor=cursor)
    return page, total, next_cursor


def retry_delivery(*, session: Session, subscription_id: int, delivery_id: int) -> WebhookDelivery:
    """Send a failed delivery's event again as a new delivery (ConflictError unless failed and the
    subscription is active)."""
    subscription = get_subscription(session=session, subscription_id=subscription_id)
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise NotFoundError("webhook delivery", delivery_id)
    if delivery.status != DeliveryStatus.failed:
        raise ConflictError(f"webhook delivery {delivery_id} is {delivery.status.value}: only a failed one is retried")
    if not subscription.active:
        raise ConflictError(f"webhook {subscription_id} is deactivated")
    return queue_retry(session=session, failed=delivery)
