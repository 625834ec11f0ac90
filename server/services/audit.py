"""The audit trail: append an entry, list entries with filters and keyset pagination. Nothing here (nor
anywhere) updates or deletes an entry; the database's triggers refuse it anyway (migration 0003)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from server.db.access_tables import AuditLog, Outcome
from server.db.base import utcnow
from server.security.principal import Principal
from server.services.pagination import id_page


@dataclass(frozen=True)
class AuditTarget:
    """What a request does: the action (the route's name) and the record it touches."""

    action: str
    object_type: str | None = None
    object_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class RequestInfo:
    request_id: str | None
    client_address: str | None


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str | None, limit: int) -> str | None:
    """``text`` cut to its column, with what no column can hold (NUL, lone surrogates) replaced: the trail
    records a refused request whatever garbage it carried (a NUL in a path would fail the insert on PostgreSQL,
    and the request would then be answered 503 for want of its audit entry)."""
    return _UNSTORABLE.sub("\ufffd", text[:limit]) if text else None


def audit_values(*, principal: Principal | None, target: AuditTarget, info: RequestInfo, outcome: Outcome,
                 status_code: int | None = None, username: str | None = None, detail: str | None = None
                 ) -> dict[str, Any]:
    """A new entry's column values. ``username``: who tried, when nobody authenticated."""
    text = detail if detail is not None else target.detail
    return {
        "at": utcnow(),
        "user_id": principal.user_id if principal else None,
        "username": principal.username if principal else _storable(username, 64),
        "role": principal.role.value if principal else None,
        "token_id": principal.token_id if principal else None,
        "action": target.action[:64], "object_type": target.object_type,
        "object_id": _storable(target.object_id, 64),
        "outcome": outcome, "status_code": status_code, "detail": _storable(text, 256),
        "client_address": info.client_address, "request_id": info.request_id,
    }


def audit_entry(*, principal: Principal | None, target: AuditTarget, info: RequestInfo, outcome: Outcome,
                status_code: int | None = None, username: str | None = None, detail: str | None = None
                ) -> AuditLog:
    """A new entry (not yet added to a session), for a caller that fills in the rest later (an upload names
    the recording it made)."""
    return AuditLog(**audit_values(principal=principal, target=target, info=info, outcome=outcome,
                                   status_code=status_code, username=username, detail=detail))


DETAIL_LENGTH = 256  # audit_log.detail


def listing_detail(head: str, ids: Sequence[object], limit: int = DETAIL_LENGTH) -> str:
    """``head: 1,2,3`` with as many ids as fit in ``limit`` characters, then ``(+N more)``: an entry lists what a
    request returned when it can, and always says how much."""
    pieces: list[str] = []
    used = len(head)
    for number, item in enumerate(ids):
        piece = (": " if number == 0 else ",") + str(item)
        left = len(ids) - number - 1
        if used + len(piece) + (len(f" (+{left} more)") if left else 0) > limit:
            pieces.append(f" (+{len(ids) - number} more)")
            break
        pieces.append(piece)
        used += len(piece)
    return (head + "".join(pieces))[:limit]


_COLUMNS = tuple(column.key for column in AuditLog.__table__.columns if column.key != "id")


def record(*, session: Session, entry: AuditLog | Mapping[str, Any]) -> None:
    """Write ``entry`` (an ``audit_entry`` or ``audit_values``) in the caller's transaction, now: it commits (or
    rolls back) with the action it records. One INSERT statement, not the ORM's unit of work: every audited
    read writes one (issue 12), and nothing reads the entry back in the same transaction."""
    if isinstance(entry, AuditLog):
        state = entry.__dict__
        entry = {key: state[key] for key in _COLUMNS if key in state}
    session.execute(insert(AuditLog.__table__), dict(entry))


@dataclass(frozen=True)
class AuditFilter:
    username: str | None = None
    user_id: int | None = None
    object_type: str | None = None
    object_id: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_audit(*, session: Session, filters: AuditFilter, limit: int, cursor: int | None = None,
               with_count: bool = False) -> tuple[Sequence[AuditLog], int | None, int | None]:
    """Newest first; ``cursor`` is the last id of the previous page. The total is counted only on request
    (the trail grows without bound, and counting it all costs a full scan)."""
    query = select(AuditLog)
    for column, value in ((AuditLog.username, filters.username), (AuditLog.user_id, filters.user_id),
                          (AuditLog.object_type, filters.object_type), (AuditLog.object_id, filters.object_id),
                          (AuditLog.action, filters.action), (AuditLog.outcome, filters.outcome)):
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditLog.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditLog.at < filters.until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) if with_count else None
    page, next_cursor = id_page(session, query, id_column=AuditLog.id, limit=limit, cursor=cursor)
    return page, total, next_cursor
