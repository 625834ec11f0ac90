"""Sign-in throttling per username and per client address, kept in the database.

Counting failures in the database (not in process memory) makes the limit hold across every API process and
across restarts. A username's count starts again after a successful sign-in; an address's does not, so one
attacker with one valid account cannot reset the limit for guessing everybody else's passwords.

Parallel tries: every try is first written, as a failure, in a transaction of its own that commits *before*
the limit is checked (``claim_attempt``), and the check counts every other try in the window, finished or
still running. Of N simultaneous tries, the k-th to commit sees at least k-1 others, so at most
``max_failures`` of them ever reach the password check. A try that was throttled is taken back
(``release_attempt``), so hammering a locked account does not keep it locked for ever; a try that succeeds is
marked so (``mark_succeeded``).

Tries older than the window count for nothing, so ``purge_attempts`` deletes them (``server.housekeeper``
runs it); the audit log keeps its own entry of every sign-in try.

The per-address limit is separate and higher than the per-username one: a whole hospital behind one NAT
address shares it, and one clinician mistyping a password must not lock out the ward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.db.access_tables import LoginAttempt
from server.db.base import utcnow
from server.db.session import session_scope


@dataclass(frozen=True)
class ThrottleRule:
    max_failures: int                      # per username
    window: timedelta
    max_failures_per_address: int | None = None  # None: the same as per username

    @property
    def per_address(self) -> int:
        return self.max_failures_per_address or self.max_failures


def retry_after(*, session: Session, username: str, client_address: str, rule: ThrottleRule,
                now: datetime | None = None, exclude_id: int | None = None) -> int | None:
    """Seconds until another try is allowed, or None when it is allowed now. ``exclude_id``: the caller's
    own claimed try, not counted against itself (every other one is, finished or not)."""
    now = now or utcnow()
    start = now - rule.window
    last_success = session.scalar(select(func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.succeeded.is_(True), LoginAttempt.at > start))
    by_user = (LoginAttempt.username == username, LoginAttempt.at > (last_success or start))
    by_address = (LoginAttempt.client_address == client_address, LoginAttempt.at > start)
    waits = []
    for condition, limit in ((by_user, rule.max_failures), (by_address, rule.per_address)):
        failures = select(LoginAttempt.at).where(LoginAttempt.succeeded.is_(False), *condition)
        if exclude_id is not None:
            failures = failures.where(LoginAttempt.id != exclude_id)
        count = session.scalar(select(func.count()).select_from(failures.subquery())) or 0
        if count >= limit:
            # the window slides: a try is allowed again when enough of the oldest failures have aged out
            times = session.scalars(failures.order_by(LoginAttempt.at.desc()).limit(limit)).all()
            waits.append((times[-1] + rule.window - now).total_seconds())
    return max(1, math.ceil(max(waits))) if waits else None


def record_attempt(*, session: Session, username: str, client_address: str, succeeded: bool) -> LoginAttempt:
    row = LoginAttempt(username=username[:64], client_address=client_address[:64], succeeded=succeeded)
    session.add(row)
    session.flush()
    return row


def claim_attempt(*, factory: sessionmaker[Session], username: str, client_address: str,
                  rule: ThrottleRule) -> tuple[int, int | None]:
    """Write this try (as a failure) and commit it, then check the limit: (the try's id, seconds to wait or
    None). A throttled try is taken back at once."""
    with session_scope(factory) as session:
        attempt_id = record_attempt(session=session, username=username, client_address=client_address,
                                    succeeded=False).id
    with session_scope(factory) as session:
        wait = retry_after(session=session, username=username, client_address=client_address, rule=rule,
                           exclude_id=attempt_id)
    if wait is not None:
        release_attempt(factory=factory, attempt_id=attempt_id)
    return attempt_id, wait


def release_attempt(*, factory: sessionmaker[Session], attempt_id: int) -> None:
    """Take back a try that never reached the password check (throttled, or the check could not run)."""
    with session_scope(factory) as session:
        session.execute(delete(LoginAttempt).where(LoginAttempt.id == attempt_id))


def mark_succeeded(*, session: Session, attempt_id: int) -> None:
    session.execute(update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(succeeded=True))


def purge_attempts(*, session: Session, window: timedelta, now: datetime | None = None) -> int:
    """Delete the tries that ``retry_after`` no longer counts (older than ``window``). Returns how many."""
    now = now or utcnow()
    return session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - window)).rowcount or 0
