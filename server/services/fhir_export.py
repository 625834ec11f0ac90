"""What a FHIR export holds: reviewed (confirmed or relabelled) events changed since a time, and audit entries,
a page at a time. Mapping to resources is ``server.fhir``'s job; this module only reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from server.db.access_tables import AuditLog
from server.db.tables import Event, EventReview, EventStatus, ModelVersion, ReviewDecision
from server.services.audit import AuditFilter, list_audit

Row = TypeVar("Row")
# A confirmed or relabelled event is a clinician's finding; flagged ones are not yet, rejected ones never.
EXPORTED = (EventStatus.confirmed, EventStatus.relabelled)


@dataclass(frozen=True)
class ExportPage(Generic[Row]):
    rows: Sequence[Row]
    total: int
    next_cursor: int | None  # None: this is the last page
    # Events on the page that were a finding once and no longer are (rejected later, or the confirmation
    # undone), with the time that happened: exported as ``entered-in-error`` so a receiver retracts them.
    retracted: dict[int, datetime] | None = None


def _review_history():  # type: ignore[no-untyped-def]
    """Per event: the latest review, the latest undo, and whether any review ever made it a finding."""
    return (select(EventReview.event_id.label("event_id"),
                   func.max(EventReview.created_at).label("reviewed"),
                   func.max(EventReview.undone_at).label("undone"),
                   func.max(case((EventReview.decision != ReviewDecision.rejected, 1), else_=0)).label("finding"))
            .group_by(EventReview.event_id).subquery())


def reviewed_events(*, session: Session, limit: int, since: datetime | None = None, cursor: int | None = None
                    ) -> ExportPage[Event]:
    """Confirmed and relabelled events, and events that were one of those once (``retracted``), oldest id
    first. ``since`` filters on the last review or undo (what FHIR calls the last update), so a system polling
    with the time of its last run also gets re-reviewed and retracted events. Keyset paging on the id, which a
    re-review never changes: every event comes once in a walk through the pages."""
    history = _review_history()
    query = (select(Event, history.c.reviewed, history.c.undone)
             .outerjoin(history, history.c.event_id == Event.id)
             .where(or_(Event.status.in_(EXPORTED), history.c.finding == 1)))
    if since is not None:
        query = query.where(or_(Event.reviewed_at >= since, history.c.reviewed >= since, history.c.undone >= since))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(Event.id > cursor)
    query = query.options(selectinload(Event.explanations), selectinload(Event.recording))
    found = session.execute(query.order_by(Event.id).limit(limit + 1)).all()
    rows = [event for event, _reviewed, _undone in found]
    retracted = {event.id: max(t for t in (reviewed, undone) if t is not None)
                 for event, reviewed, undone in found[:limit] if event.status not in EXPORTED}
    return ExportPage(rows[:limit], total, rows[limit - 1].id if len(rows) > limit else None, retracted)


def model_versions(*, session: Session, ids: set[int]) -> dict[int, ModelVersion]:
    """The model versions named by a page of events, by id."""
    if not ids:
        return {}
    return {m.id: m for m in session.scalars(select(ModelVersion).where(ModelVersion.id.in_(ids)))}


def audit_entries(*, session: Session, limit: int, since: datetime | None = None, until: datetime | None = None,
                  cursor: int | None = None) -> ExportPage[AuditLog]:
    """Audit entries in ``[since, until)``, newest first (the order of ``GET /audit``; new entries written while
    a client pages have higher ids and never shift the pages it has yet to read)."""
    rows, total, next_cursor = list_audit(session=session, filters=AuditFilter(since=since, until=until),
                                          limit=limit, cursor=cursor, with_count=True)
    return ExportPage(rows, total or 0, next_cursor)
