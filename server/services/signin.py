"""Signing in with a username and password: claim a try against the throttle, verify, start a fresh session."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from server.db.access_tables import User, UserSession
from server.security.passwords import hash_password, needs_rehash, verify_password
from server.services.browser_sessions import start_session
from server.services.login_throttle import ThrottleRule, claim_attempt, mark_succeeded, release_attempt
from server.services.users import get_user, may_act, normalise_username

# argon2id costs ~50 ms of CPU and 64 MiB per check: at most this many run at once in a process, so a burst
# of sign-ins (or of guesses from many addresses) queues instead of taking every core from scoring.
MAX_CONCURRENT_VERIFICATIONS = 2
VERIFY_QUEUE_SECONDS = 20.0  # a try that waits longer for its turn is answered 429 (and not counted)
_verifications = threading.BoundedSemaphore(MAX_CONCURRENT_VERIFICATIONS)


@dataclass(frozen=True)
class SignIn:
    """What happened: ``row`` and ``cookie`` on success, ``retry_after`` seconds when throttled."""

    username: str
    user: User | None = None
    row: UserSession | None = None
    cookie: str | None = None
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.row is not None


def sign_in(*, session: Session, factory: sessionmaker[Session], username: str, password: str,
            client_address: str, rule: ThrottleRule, absolute: timedelta, production: bool,
            replaces: str | None) -> SignIn:
    """Claim the try first (committed in its own transaction, then counted: a throttled try is not even
    verified, and parallel tries cannot all slip under the limit), then check the password.

    Unknown user, wrong password, disabled account and a demo account in production all answer the same, so
    the answer does not tell an attacker which usernames exist.
    """
    name = normalise_username(username)[:64]
    attempt_id, wait = claim_attempt(factory=factory, username=name, client_address=client_address, rule=rule)
    if wait is not None:
        return SignIn(username=name, retry_after=wait)
    if not _verifications.acquire(timeout=VERIFY_QUEUE_SECONDS):
        release_attempt(factory=factory, attempt_id=attempt_id)
        return SignIn(username=name, retry_after=1)
    try:
        user = get_user(session=session, username=name)
        good = verify_password(user.password_hash if user else None, password)
    finally:
        _verifications.release()
    if user is None or not good or not may_act(user, production=production):
        return SignIn(username=name, user=user)  # the claimed try stays, as the failure it is
    mark_succeeded(session=session, attempt_id=attempt_id)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    row, cookie = start_session(session=session, user=user, absolute=absolute, client_address=client_address,
                                replaces=replaces)
    return SignIn(username=name, user=user, row=row, cookie=cookie)
