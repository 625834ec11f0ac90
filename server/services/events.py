"""Event rows: read, review, undo a review (the queue and its pages: ``server.services.event_queue``)."""

from __future__ import annotations

from sqlalchemy.orm import Session, selectinload

from server.db.tables import Event, Explanation
from server.schemas import ReviewIn
from server.security.principal import Principal
from server.services.errors import NotFoundError
from server.services.reviews import record_review, undo_review
from server.services.webhook_outbox import WebhookEventType, queue_event_webhooks


def get_event(*, session: Session, event_id: int) -> Event:
    """The event, or NotFoundError."""
    event = session.get(Event, event_id, options=[selectinload(Event.explanations)])
    if event is None:
        raise NotFoundError("event", event_id)
    return event


def get_explanation(*, session: Session, explanation_id: int) -> Explanation:
    """The explanation, or NotFoundError."""
    explanation = session.get(Explanation, explanation_id)
    if explanation is None:
        raise NotFoundError("explanation", explanation_id)
    return explanation


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
