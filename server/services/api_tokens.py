"""API tokens for hospital systems: created (shown once), resolved on each request, revoked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from server.db.access_tables import ApiToken, User
from server.db.base import utcnow
from server.security.credentials import digest, new_api_token
from server.security.permissions import Scope, usable_scopes
from server.services.errors import NotFoundError
from server.services.users import get_user, may_act

#: how stale ``last_used_at`` may get: coarse on purpose, one write a minute per token, not one per request
LAST_USED_EVERY = timedelta(minutes=1)


class ReviewTokenRefused(PermissionError):
    """Nobody may mint a ``review`` token for someone else over the API: a review is signed by its clinician."""


def create_token(*, session: Session, username: str, scopes: Iterable[str], expires_days: int | None,
                 name: str | None = None, created_by: User | None = None) -> tuple[ApiToken, str]:
    """A new token for ``username``; returns (row, the token itself). Only the digest is stored.

    Scopes the user's role could never use are refused here (ValueError), so a token's scopes say what it
    really can do; the role is checked again on every request in case it changes.

    ``created_by``: the admin asking over REST (None: the CLI, run by an operator on the server). An admin
    may not give anyone else a ``review`` token (ReviewTokenRefused): with it they could review as that
    clinician. The CLI may, and its audit entry says so.
    """
    user = get_user(session=session, username=username)
    if user is None:
        raise NotFoundError("user", username)
    if not user.active:
        raise ValueError(f"user {user.username!r} is disabled")
    wanted = {Scope(s) for s in scopes}
    if not wanted:
        raise ValueError("a token needs at least one scope")
    if created_by is not None and created_by.id != user.id and Scope.review in wanted:
        raise ReviewTokenRefused(f"a token with the review scope acts as {user.username!r} in their reviews: "
                                 "only they (or an operator with `wardwatch tokens create` on the server) "
                                 "may create one")
    beyond = wanted - usable_scopes(user.role)
    if beyond:
        raise ValueError(f"a {user.role.value} cannot use scope(s) {', '.join(sorted(beyond))}")
    secret = new_api_token()
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
    token = ApiToken(user_id=user.id, token_hash=digest(secret), scopes=sorted(s.value for s in wanted),
                     expires_at=expires_at, name=name, created_by_user_id=created_by.id if created_by else None)
    session.add(token)
    session.flush()
    return token, secret


def resolve_token(*, session: Session, secret: str, production: bool, now: datetime | None = None) -> ApiToken | None:
    """The live token for ``secret`` (not revoked, not expired, its user may act), or None."""
    now = now or utcnow()
    token = session.scalars(select(ApiToken).options(joinedload(ApiToken.user))
                            .where(ApiToken.token_hash == digest(secret))).first()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        return None
    if not may_act(token.user, production=production):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        token.last_used_at = now
    return token


def revoke_token(*, session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError("token", token_id)
    token.revoked_at = token.revoked_at or utcnow()
    session.flush()
    return token


def list_tokens(*, session: Session, user: User | None = None) -> Sequence[ApiToken]:
    query = select(ApiToken).options(joinedload(ApiToken.user)).order_by(ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return session.scalars(query).all()
