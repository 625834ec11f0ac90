"""An event's review history: append a decision, undo the latest one, list them, and keep the event's own
review columns equal to the latest review that is not undone (``flagged`` and empty when there is none).

Rules (docs/reviews.md):
* a relabel names one of the classes of the model version that flagged the event (its own label included);
* undo takes back the event's latest standing review, and only its reviewer may do it: undoing someone else's
  decision would silently reverse a colleague's clinical judgement (they can review again instead);
* the event row is locked *before* anything about the event is read (``lock_event``), and the event's review
  columns are then recomputed from the history, inside the lock: two clinicians reviewing at once append in
  order and the event shows whichever came last, and two undos at once take back one review, not two;
* an undo may name the review it takes back (``review_id``: the one the client saw as the latest); without it,
  the latest standing review when the request arrived is the one meant. Either way, if that is no longer the
  latest standing review once the lock is held (a concurrent undo took it back, someone reviewed since), the
  undo is refused (ConflictError) rather than taking back the review below it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.tables import Event, EventReview, EventStatus, ModelVersion, ReviewDecision
from server.observability.metrics import REVIEWS
from server.schemas import ReviewIn
from server.security.principal import Principal
from server.services.errors import ConflictError, InvalidInputError, NotFoundError
from server.services.pagination import id_page


def allowed_labels(*, session: Session, event: Event) -> list[str]:
    """The classes of the model version that flagged ``event``: what a relabel may choose from."""
    version = session.get(ModelVersion, event.model_version_id)
    return [str(name) for name in version.class_names] if version is not None else [event.label]


def lock_event(*, session: Session, event_id: int) -> Event:
    """The event, read *after* taking its write lock, held until the transaction ends: every history change
    goes through here first. NotFoundError for an unknown event.

    Why the order matters: an Event loaded before the lock is a stale copy once a concurrent review commits,
    and SQLAlchemy writes only the columns that differ from its copy, so the row would end up a mix of both
    reviews (the status of one, the reviewer of the other). PostgreSQL: ``SELECT ... FOR NO KEY UPDATE`` (the
    row lock an UPDATE of these columns takes; it does not block inserts that merely reference the event), with
    ``populate_existing`` so a copy already in the session is overwritten with what the lock returned. SQLite
    has no row locks; a write takes the database's write lock (waiting up to the busy timeout), so a no-op
    UPDATE of the row comes first, and every read after it in the transaction sees the latest commit.
    """
    # no explanations loaded: the answer shows the event's stored agreement (migration 0014)
    query = select(Event).where(Event.id == event_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE event SET status = status WHERE id = :id"), {"id": event_id})
    else:
        query = query.with_for_update(key_share=True)
    event = session.scalars(query).first()
    if event is None:
        raise NotFoundError("event", event_id)
    return event


def record_review(*, session: Session, event_id: int, review: ReviewIn, reviewer: Principal) -> Event:
    """Append ``review`` to the event's history and show it on the event (returned, locked and current).
    NotFoundError for an unknown event, InvalidInputError for a relabel to a label the event's model lacks."""
    event = lock_event(session=session, event_id=event_id)
    if review.decision == "relabelled":
        labels = allowed_labels(session=session, event=event)
        if review.label not in labels:
            raise InvalidInputError(f"label {review.label!r} is not a class of model version "
                                    f"{event.model_version_id}, which flagged event {event.id}; "
                                    f"allowed labels: {', '.join(labels)}")
    session.add(EventReview(event_id=event.id, decision=ReviewDecision(review.decision),
                            label=review.label if review.decision == "relabelled" else None, note=review.note,
                            reviewer_id=reviewer.user_id, reviewer=reviewer.username, token_id=reviewer.token_id,
                            created_at=utcnow()))
    session.flush()
    _show(event, current_review(session=session, event_id=event.id))
    REVIEWS.labels(decision=review.decision).inc()  # the decision only: no event, reviewer or label
    return event


def undo_review(*, session: Session, event_id: int, by: Principal, review_id: int | None = None) -> Event:
    """Take back ``review_id`` (None: the latest standing review as the request found it), which must be the
    event's latest standing review and ``by``'s own; the event (returned) goes back to the review before it,
    or to ``flagged``. NotFoundError for an unknown event or a ``review_id`` that is not one of its reviews;
    ConflictError when there is nothing to undo, the review is already undone, another came after it, or it
    is someone else's."""
    # What the caller means to undo, read before waiting for the lock: a concurrent undo that commits while
    # this one waits then makes it a conflict, not an undo of the next review down.
    meant = review_id if review_id is not None else _standing_id(session, event_id)
    event = lock_event(session=session, event_id=event_id)
    if review_id is not None:
        named = session.get(EventReview, review_id, populate_existing=True)
        if named is None or named.event_id != event.id:
            raise NotFoundError("review", review_id)
        if named.undone_at is not None:
            raise ConflictError(f"review {review_id} of event {event.id} is already undone (by {named.undone_by}): "
                                "nothing was changed")
    latest = current_review(session=session, event_id=event.id)
    if latest is None:
        raise ConflictError(f"event {event.id} has no review to undo")
    if latest.id != meant:
        raise ConflictError(f"the review to undo is no longer the latest of event {event.id} (undone meanwhile, "
                            f"or review {latest.id} by {latest.reviewer} came after it): nothing was changed; "
                            "reload the history and undo again if you still mean to")
    if latest.reviewer_id != by.user_id:
        raise ConflictError(f"the latest review of event {event.id} is by {latest.reviewer}: only they can undo "
                            "it (review the event again to record your own decision)")
    latest.undone_at = utcnow()
    latest.undone_by_id = by.user_id
    latest.undone_by = by.username
    session.flush()
    _show(event, current_review(session=session, event_id=event.id))
    return event


def current_review(*, session: Session, event_id: int) -> EventReview | None:
    """The review the event shows: its newest one not undone, or None. Read as stored (``populate_existing``):
    under the event's lock, a copy already in the session must not stand in for the row."""
    return session.scalars(select(EventReview).where(EventReview.event_id == event_id,
                                                     EventReview.undone_at.is_(None))
                           .order_by(EventReview.id.desc()).limit(1)
                           .execution_options(populate_existing=True)).first()


def _standing_id(session: Session, event_id: int) -> int | None:
    """The id of the event's latest standing review, without loading the row into the session."""
    return session.scalar(select(EventReview.id).where(EventReview.event_id == event_id,
                                                       EventReview.undone_at.is_(None))
                          .order_by(EventReview.id.desc()).limit(1))


def list_reviews(*, session: Session, event_id: int, limit: int,
                 cursor: int | None = None) -> tuple[Sequence[EventReview], int, int | None]:
    """The event's history, newest first (undone ones included); ``cursor`` is the last id of the previous
    page. Returns (page, total, next cursor or None). NotFoundError for an unknown event."""
    if session.get(Event, event_id) is None:
        raise NotFoundError("event", event_id)
    query = select(EventReview).where(EventReview.event_id == event_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page, next_cursor = id_page(session, query, id_column=EventReview.id, limit=limit, cursor=cursor)
    return page, total, next_cursor


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
