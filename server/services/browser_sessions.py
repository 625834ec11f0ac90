"""Server-side browser sessions: started at sign-in, checked on every request, ended at sign-out or expiry.

The cookie holds a random id; the table holds its sha256, so a copy of the database opens no session. Every
sign-in gets a new id (the one the browser brought, if any, is revoked), which rules out session fixation.
Rows that can never open a session again (past their end, idle too long, revoked) are deleted by
``purge_sessions`` (``server.housekeeper`` runs it); sign-ins and sign-outs stay in the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, joinedload

from server.db.access_tables import User, UserSession
from server.db.base import utcnow
from server.security.credentials import digest, new_csrf_token, new_session_id

TOUCH_EVERY = timedelta(seconds=30)  # last_seen is refreshed at most this often (fewer writes)


def start_session(*, session: Session, user: User, absolute: timedelta, client_address: str | None,
                  replaces: str | None = None) -> tuple[UserSession, str]:
    """A new session for ``user``; returns (row, the cookie value). ``replaces``: the old cookie, revoked."""
    if replaces:
        end_session(session=session, session_id=replaces)
    secret = new_session_id()
    now = utcnow()
    row = UserSession(user=user, id_hash=digest(secret), csrf_token=new_csrf_token(), created_at=now,
                      last_seen_at=now, expires_at=now + absolute, client_address=client_address)
    session.add(row)
    session.flush()
    return row, secret


def resolve_session(*, session: Session, session_id: str, idle: timedelta,
                    now: datetime | None = None) -> UserSession | None:
    """The live session for the cookie value, or None (unknown, revoked, idle too long, past its end)."""
    now = now or utcnow()
    row = session.scalars(select(UserSession).options(joinedload(UserSession.user))
                          .where(UserSession.id_hash == digest(session_id))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return row


def get_session(*, session: Session, row_id: int) -> UserSession | None:
    return session.get(UserSession, row_id)


def idle_expiry(row: UserSession, idle: timedelta) -> datetime:
    return min(row.expires_at, row.last_seen_at + idle)


def end_session(*, session: Session, session_id: str) -> None:
    """Revoke the session with this cookie value, if it exists."""
    row = session.scalars(select(UserSession).where(UserSession.id_hash == digest(session_id))).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()


def purge_sessions(*, session: Session, idle: timedelta, now: datetime | None = None) -> int:
    """Delete every session that ``resolve_session`` would refuse whatever happens next: revoked, past its
    absolute end, or idle for ``idle`` or longer (a later request cannot revive it). Returns how many."""
    now = now or utcnow()
    dead = or_(UserSession.revoked_at.is_not(None), UserSession.expires_at <= now,
               UserSession.last_seen_at <= now - idle)
    return session.execute(delete(UserSession).where(dead)).rowcount or 0
