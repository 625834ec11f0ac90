"""What a FHIR export holds: reviewed (confirmed or relabelled) events changed since a time, and audit entries,
a page at a time. Mapping to resources is ``server.fhir``'s job; this module only reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from server.db.access_tables import AuditLog
from server.db.tables import Event, EventStatus, ModelVersion
from server.services.audit import AuditFilter, list_audit

Row = TypeVar("Row")
# A confirmed or relabelled event is a clinician's finding; flagged ones are not yet, rejected ones never.
EXPORTED = (EventStatus.confirmed, EventStatus.relabelled)


@dataclass(frozen=True)
class ExportPage(Generic[Row]):
    rows: Sequence[Row]
    total: int
    next_cursor: int | None  # None: this is the last page


def reviewed_events(*, session: Session, limit: int, since: datetime | None = None, cursor: int | None = None
                    ) -> ExportPage[Event]:
    """Confirmed and relabelled events, oldest id first. ``since`` filters on the review time (what FHIR calls
    the last update), so a system polling with the time of its last run also gets re-reviewed events. Keyset
    paging on the id, which a re-review never changes: every event comes once in a walk through the pages."""
    query = select(Event).where(Event.status.in_(EXPORTED))
    if since is not None:
        query = query.where(Event.reviewed_at >= since)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(Event.id > cursor)
    query = query.options(selectinload(Event.explanations), selectinload(Event.recording))
    rows = session.scalars(query.order_by(Event.id).limit(limit + 1)).all()
    return ExportPage(rows[:limit], total, rows[limit - 1].id if len(rows) > limit else None)


def model_versions(*, session: Session, ids: set[int]) -> dict[int, ModelVersion]:
    """The model versions named by a page of events, by id."""
    if not ids:
        return {}
    return {m.id: m for m in session.scalars(select(ModelVersion).where(ModelVersion.id.in_(ids)))}


def audit_entries(*, session: Session, limit: int, since: datetime | None = None, until: datetime | None = None,
                  cursor: int | None = None) -> ExportPage[AuditLog]:
    """Audit entries in ``[since, until)``, newest first (the order of ``GET /audit``; new entries written while
    a client pages have higher ids and never shift the pages it has yet to read)."""
    rows, total = list_audit(session=session, filters=AuditFilter(since=since, until=until), limit=limit + 1,
                             cursor=cursor, with_count=True)
    return ExportPage(rows[:limit], total or 0, rows[limit - 1].id if len(rows) > limit else None)
