"""Signing in with a username and password: throttle, verify, start a fresh session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from server.db.access_tables import User, UserSession
from server.security.passwords import hash_password, needs_rehash, verify_password
from server.services.browser_sessions import start_session
from server.services.login_throttle import ThrottleRule, record_attempt, retry_after
from server.services.users import get_user, may_act, normalise_username


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


def sign_in(*, session: Session, username: str, password: str, client_address: str, rule: ThrottleRule,
            absolute: timedelta, production: bool, replaces: str | None) -> SignIn:
    """Check the throttle first (a throttled try is not even verified), then the password.

    Unknown user, wrong password, disabled account and a demo account in production all answer the same, so
    the answer does not tell an attacker which usernames exist.
    """
    name = normalise_username(username)[:64]
    wait = retry_after(session=session, username=name, client_address=client_address, rule=rule)
    if wait is not None:
        return SignIn(username=name, retry_after=wait)
    user = get_user(session=session, username=name)
    good = verify_password(user.password_hash if user else None, password)
    if user is None or not good or not may_act(user, production=production):
        record_attempt(session=session, username=name, client_address=client_address, succeeded=False)
        return SignIn(username=name, user=user)
    record_attempt(session=session, username=name, client_address=client_address, succeeded=True)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    row, cookie = start_session(session=session, user=user, absolute=absolute, client_address=client_address,
                                replaces=replaces)
    return SignIn(username=name, user=user, row=row, cookie=cookie)
