"""Who is calling: a bearer token (hospital systems) or the session cookie set at sign-in (browsers).

A token in the ``Authorization`` header wins over a cookie; any credential that does not resolve to an active
account is a 401 with the ``WWW-Authenticate: Bearer`` challenge (RFC 6750), never a fallback to the other.
Token look-ups go through the process's ``TokenCache`` (``server.services.token_cache``: a revoked token is
refused on the next request).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from server.security.principal import Principal
from server.services.browser_sessions import resolve_session
from server.services.token_cache import TokenCache
from server.services.users import may_act
from server.settings import Settings

SESSION_COOKIE = "wardwatch_session"


def unauthorized(detail: str, *, error: str | None = None, clear_cookie: bool = False) -> HTTPException:
    """401 with the ``WWW-Authenticate`` challenge RFC 6750 asks for."""
    challenge = 'Bearer realm="wardwatch"' + (f', error="{error}"' if error else "")
    headers = {"WWW-Authenticate": challenge}
    if clear_cookie:
        headers["Set-Cookie"] = f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
    return HTTPException(401, detail=detail, headers=headers)


def authenticate(request: Request, session: Session, settings: Settings, tokens: TokenCache) -> Principal:
    """The caller, from a bearer token or the session cookie; 401 otherwise."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise unauthorized("send the API token as 'Authorization: Bearer <token>'", error="invalid_request")
        principal = tokens.resolve(session=session, secret=secret.strip(), production=settings.production)
        if principal is None:
            raise unauthorized("invalid, expired or revoked token", error="invalid_token")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        row = resolve_session(session=session, session_id=cookie,
                              idle=timedelta(minutes=settings.session_idle_minutes))
        if row is None or not may_act(row.user, production=settings.production):
            raise unauthorized("your session has ended: sign in again", clear_cookie=True)
        return Principal(user_id=row.user.id, username=row.user.username, role=row.user.role,
                         session_id=row.id, csrf_token=row.csrf_token)
    raise unauthorized("authentication required: sign in, or send 'Authorization: Bearer <token>'")
