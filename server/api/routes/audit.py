"""The audit trail, for auditors and admins: filter, page through. Read-only: no route edits or deletes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import SessionDep
from server.api.params import BigCursorQuery, DatetimeQuery, IdQuery, TextQuery
from server.api.security import ReadAudit
from server.db.access_tables import Outcome
from server.schemas import AuditEntryPublic, AuditPublic
from server.services.audit import AuditFilter, list_audit

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditPublic)
def read_audit(
    session: SessionDep,
    _access: ReadAudit,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: BigCursorQuery = None,
    user: TextQuery(64, "username") = None,
    user_id: IdQuery = None,
    object_type: TextQuery(32) = None,
    object_id: TextQuery(64) = None,
    action: TextQuery(64) = None,
    outcome: Outcome | None = None,
    since: DatetimeQuery = None,
    until: DatetimeQuery = None,
    count: Annotated[bool, Query(description="also count every matching entry (slower)")] = False,
) -> AuditPublic:
    """Entries newest first. Reading the trail is itself recorded in it."""
    filters = AuditFilter(username=user.lower() if user else None, user_id=user_id, object_type=object_type,
                          object_id=object_id, action=action, outcome=outcome, since=since, until=until)
    page, total, next_cursor = list_audit(session=session, filters=filters, limit=limit, cursor=cursor,
                                          with_count=count)
    return AuditPublic(data=[AuditEntryPublic.model_validate(e) for e in page], count=total, next_cursor=next_cursor)
