"""Event rows: list with filters and cursor pagination, read, review, undo a review."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from server.db.tables import Event, EventStatus
from server.schemas import ReviewIn
from server.security.principal import Principal
from server.services.errors import NotFoundError
from server.services.reviews import record_review, undo_review
from server.services.webhook_outbox import WebhookEventType, queue_event_webhooks


def list_events(*, session: Session, limit: int, cursor: int | None = None, status: EventStatus | None = None,
                label: str | None = None, recording_id: int | None = None, since: datetime | None = None,
                until: datetime | None = None) -> tuple[Sequence[Event], int]:
    """Newest first; ``cursor`` is the last id of the previous page. Returns (page, total matching)."""
    query = select(Event)
    if status is not None:
        query = query.where(Event.status == status)
    if label is not None:
        query = query.where(Event.label == label)
    if recording_id is not None:
        query = query.where(Event.recording_id == recording_id)
    if since is not None:
        query = query.where(Event.start_wall >= since)
    if until is not None:
        query = query.where(Event.start_wall < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(Event.id < cursor)
    query = query.options(selectinload(Event.explanations)).order_by(Event.id.desc()).limit(limit)
    return session.scalars(query).all(), total


def get_event(*, session: Session, event_id: int) -> Event:
    """The event, or NotFoundError."""
    event = session.get(Event, event_id, options=[selectinload(Event.explanations)])
    if event is None:
        raise NotFoundError("event", event_id)
    return event


def review_event(*, session: Session, event_id: int, review: ReviewIn, reviewer: Principal) -> Event:
    """Record a clinician's decision: appended to the event's review history (``server.services.reviews``),
    which the event's status, label, note and reviewer then show."""
    event = record_review(session=session, event_id=event_id, review=review, reviewer=reviewer)
    session.flush()
    queue_event_webhooks(session=session, event=event, event_type=WebhookEventType.event_reviewed)
    return event


def undo_event_review(*, session: Session, event_id: int, by: Principal, review_id: int | None = None) -> Event:
    """Take back ``by``'s latest standing review of the event (``review_id``: the one the client means): it
    shows the review before (or is flagged)."""
    event = undo_review(session=session, event_id=event_id, by=by, review_id=review_id)
    session.flush()
    # An undo changes what the event says, so subscribers hear of it as they hear of the review it takes back.
    queue_event_webhooks(session=session, event=event, event_type=WebhookEventType.event_reviewed)
    return event
