"""Typed tables for signed webhooks: subscriptions, the outbox of deliveries, and every attempt made.

A delivery row is the outbox: it is written in the same transaction as the event or review it reports, so a
process that dies after the commit loses nothing (the sweeper sends what is due). Each attempt keeps the exact
bytes sent and the status code answered, so the delivery log shows 500, 500, 200 and not only the last one.

``webhook_delivery.event_id`` has no foreign key on purpose: re-scoring a recording replaces its events, and
the log of what was sent about the old ones must stay.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.access_tables import BigId
from server.db.base import Base, utcnow


class WebhookEventType(enum.StrEnum):
    event_created = "event.created"
    event_reviewed = "event.reviewed"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored by value ("event.created"), as the payloads and the API spell them; strings, not native enums.
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True,
                values_callable=lambda members: [member.value for member in members])


class WebhookSubscription(Base):
    """A hospital system's endpoint and the event types it wants. Deactivated, never deleted (the log refers
    to it)."""

    __tablename__ = "webhook_subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(doc="WebhookEventType values")
    description: Mapped[str | None] = mapped_column(String(128), doc="what system it is, for the admin")
    secret_encrypted: Mapped[str] = mapped_column(Text, doc="the signing secret, settings.secret_box()-encrypted")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deactivated_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One event reported to one subscription: pending until a 2xx (delivered) or until it cannot succeed
    (failed: a 4xx, or the attempts ran out). ``next_attempt_at`` is when it is due; while an attempt is in
    flight it is pushed forward by a lease, so a second sender finds nothing to do. ``handed_over_at`` keeps
    the sweepers from queueing a due delivery again while an earlier hand-over may still be waiting in a
    queue."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_subscription", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, doc="the payload's id: receivers dedupe on it")
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscription.id"))
    event_type: Mapped[WebhookEventType] = mapped_column(_enum(WebhookEventType, "webhook_event_type"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(doc="the event as the API showed it when this was queued")
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "webhook_delivery_status"),
                                                   default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    next_attempt_at: Mapped[datetime | None]
    handed_over_at: Mapped[datetime | None] = mapped_column(
        doc="when a sweeper last queued it: a due delivery is queued once per claim lease (migration 0008)")
    retry_of_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("webhook_delivery.id"),
                                                    doc="an admin's retry of this failed delivery")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    subscription: Mapped[WebhookSubscription] = relationship()
    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan", order_by="WebhookAttempt.number")


class WebhookAttempt(Base):
    """One POST: the exact body sent (its ``timestamp`` is this attempt's), and what came back. A row without
    a status code or an error is an attempt whose sender stopped mid-way."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    timestamp: Mapped[int] = mapped_column(BigInteger, doc="X-Wardwatch-Timestamp: Unix seconds, signed in the body")
    body: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int | None]

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
