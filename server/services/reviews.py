"""An event's review history: append a decision, undo the latest one, list them, and keep the event's own
review columns equal to the latest review that is not undone (``flagged`` and empty when there is none).

Rules (docs/reviews.md):
* a relabel names one of the classes of the model version that flagged the event (its own label included);
* undo takes back the event's latest standing review, and only its reviewer may do it: undoing someone else's
  decision would silently reverse a colleague's clinical judgement (they can review again instead);
* the event row is locked while its history changes (PostgreSQL; SQLite serialises writers anyway), so two
  clinicians reviewing at once append in order and the event shows whichever came last.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.tables import Event, EventReview, EventStatus, ModelVersion, ReviewDecision
from server.schemas import ReviewIn
from server.security.principal import Principal
from server.services.errors import ConflictError, InvalidInputError, NotFoundError


def allowed_labels(*, session: Session, event: Event) -> list[str]:
    """The classes of the model version that flagged ``event``: what a relabel may choose from."""
    version = session.get(ModelVersion, event.model_version_id)
    return [str(name) for name in version.class_names] if version is not None else [event.label]


def record_review(*, session: Session, event: Event, review: ReviewIn, reviewer: Principal) -> EventReview:
    """Append ``review`` to the event's history and show it on the event. InvalidInputError for a relabel to a
    label the event's model does not have."""
    _lock(session, event)
    if review.decision == "relabelled":
        labels = allowed_labels(session=session, event=event)
        if review.label not in labels:
            raise InvalidInputError(f"label {review.label!r} is not a class of model version "
                                    f"{event.model_version_id}, which flagged event {event.id}; "
                                    f"allowed labels: {', '.join(labels)}")
    row = EventReview(event_id=event.id, decision=ReviewDecision(review.decision),
                      label=review.label if review.decision == "relabelled" else None, note=review.note,
                      reviewer_id=reviewer.user_id, reviewer=reviewer.username, token_id=reviewer.token_id,
                      created_at=utcnow())
    session.add(row)
    session.flush()
    _show(event, row)
    return row


def undo_review(*, session: Session, event: Event, by: Principal) -> EventReview:
    """Take back the event's latest standing review, made by ``by``; the event returns to the review before
    it (or to ``flagged``). ConflictError when there is nothing to undo or the review is someone else's."""
    _lock(session, event)
    latest = current_review(session=session, event_id=event.id)
    if latest is None:
        raise ConflictError(f"event {event.id} has no review to undo")
    if latest.reviewer_id != by.user_id:
        raise ConflictError(f"the latest review of event {event.id} is by {latest.reviewer}: only they can undo "
                            "it (review the event again to record your own decision)")
    latest.undone_at = utcnow()
    latest.undone_by_id = by.user_id
    latest.undone_by = by.username
    session.flush()
    _show(event, current_review(session=session, event_id=event.id))
    return latest


def current_review(*, session: Session, event_id: int) -> EventReview | None:
    """The review the event shows: its newest one not undone, or None."""
    return session.scalars(select(EventReview).where(EventReview.event_id == event_id,
                                                     EventReview.undone_at.is_(None))
                           .order_by(EventReview.id.desc()).limit(1)).first()


def list_reviews(*, session: Session, event_id: int, limit: int,
                 cursor: int | None = None) -> tuple[Sequence[EventReview], int]:
    """The event's history, newest first (undone ones included); ``cursor`` is the last id of the previous
    page. Returns (page, total). NotFoundError for an unknown event."""
    if session.get(Event, event_id) is None:
        raise NotFoundError("event", event_id)
    query = select(EventReview).where(EventReview.event_id == event_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(EventReview.id < cursor)
    return session.scalars(query.order_by(EventReview.id.desc()).limit(limit)).all(), total


def _lock(session: Session, event: Event) -> None:
    """Serialise history changes per event (FOR UPDATE is a no-op on SQLite, whose writers queue anyway)."""
    session.execute(select(Event.id).where(Event.id == event.id).with_for_update())


def _show(event: Event, review: EventReview | None) -> None:
    """Copy ``review`` (None: no standing review) onto the event's columns, which the queue filters on."""
    if review is None:
        event.status, event.reviewed_label, event.note, event.reviewer, event.reviewed_at = (
            EventStatus.flagged, None, None, None, None)
        return
    event.status = EventStatus(review.decision.value)
    event.reviewed_label = review.label
    event.note = review.note
    event.reviewer = review.reviewer
    event.reviewed_at = review.created_at
