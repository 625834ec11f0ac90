"""Sign-in throttling per username and per client address, kept in the database.

Counting failures in the database (not in process memory) makes the limit hold across every API process and
across restarts. A username's count starts again after a successful sign-in; an address's does not, so one
attacker with one valid account cannot reset the limit for guessing everybody else's passwords.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.access_tables import LoginAttempt
from server.db.base import utcnow


@dataclass(frozen=True)
class ThrottleRule:
    max_failures: int
    window: timedelta


def retry_after(*, session: Session, username: str, client_address: str, rule: ThrottleRule,
                now: datetime | None = None) -> int | None:
    """Seconds until another try is allowed, or None when it is allowed now."""
    now = now or utcnow()
    start = now - rule.window
    last_success = session.scalar(select(func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.succeeded.is_(True), LoginAttempt.at > start))
    by_user = (LoginAttempt.username == username, LoginAttempt.at > (last_success or start))
    by_address = (LoginAttempt.client_address == client_address, LoginAttempt.at > start)
    waits = []
    for condition in (by_user, by_address):
        failures = select(LoginAttempt.at).where(LoginAttempt.succeeded.is_(False), *condition)
        count = session.scalar(select(func.count()).select_from(failures.subquery())) or 0
        if count >= rule.max_failures:
            # the window slides: a try is allowed again when enough of the oldest failures have aged out
            times = session.scalars(failures.order_by(LoginAttempt.at.desc()).limit(rule.max_failures)).all()
            waits.append((times[-1] + rule.window - now).total_seconds())
    return max(1, math.ceil(max(waits))) if waits else None


def record_attempt(*, session: Session, username: str, client_address: str, succeeded: bool) -> None:
    session.add(LoginAttempt(username=username[:64], client_address=client_address[:64], succeeded=succeeded))
    session.flush()
