"""Deleting what can never be used again: ended browser sessions and sign-in tries older than the throttle's
window. Both tables grow with every sign-in, and nothing else ever removes a row from them.

The audit log is not touched, here or anywhere: it is append-only (its triggers refuse DELETE) and keeps every
sign-in, sign-out and refusal for as long as the deployment keeps the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.services.browser_sessions import purge_sessions
from server.services.login_throttle import purge_attempts
from server.settings import Settings


@dataclass(frozen=True)
class Purged:
    sessions: int
    login_attempts: int

    def __str__(self) -> str:
        return f"{self.sessions} ended session(s), {self.login_attempts} old sign-in attempt(s)"


def purge_expired(*, session: Session, settings: Settings, now: datetime | None = None) -> Purged:
    """Delete ended sessions (revoked, past their end, idle too long) and tries outside the throttle window,
    as this deployment's settings define them."""
    now = now or utcnow()
    return Purged(
        sessions=purge_sessions(session=session, idle=timedelta(minutes=settings.session_idle_minutes), now=now),
        login_attempts=purge_attempts(session=session, window=timedelta(seconds=settings.login_window_seconds),
                                      now=now),
    )
