"""Browser sign-in: ``POST /session`` (username + password -> session cookie and CSRF token),
``GET /session`` (who am I, the CSRF token), ``DELETE /session`` (sign out)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from server.api.auditing import audit_target, request_info
from server.api.authentication import SESSION_COOKIE
from server.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from server.api.security import Authenticated, Public
from server.db.access_tables import AuditLog, Outcome, Role, UserSession
from server.schemas import LoginIn, SessionPublic, UserPublic
from server.security.permissions import Scope, permissions_of
from server.services.audit import audit_entry, record
from server.services.browser_sessions import end_session, get_session, idle_expiry
from server.services.login_throttle import ThrottleRule
from server.services.signin import SignIn, sign_in
from server.settings import Settings

router = APIRouter(tags=["session"])


@router.post("/session", response_model=SessionPublic, dependencies=[Public],
             responses={401: {"description": "wrong username or password"},
                        429: {"description": "too many failed sign-ins (see Retry-After)"}})
def login(request: Request, session: SessionDep, factory: SessionFactoryDep, settings: SettingsDep,
          body: LoginIn) -> Response:
    """Sign in. Sets an HttpOnly, SameSite=Strict session cookie (Secure over https) with a new session id
    every time, and returns the CSRF token to send in ``X-CSRF-Token`` on every write."""
    rule = ThrottleRule(settings.login_max_failures, timedelta(seconds=settings.login_window_seconds),
                        max_failures_per_address=settings.login_max_failures_per_address)
    result = sign_in(session=session, factory=factory, username=body.username, password=body.password,
                     client_address=request_info(request).client_address or "unknown", rule=rule,
                     absolute=timedelta(hours=settings.session_absolute_hours), production=settings.production,
                     replaces=request.cookies.get(SESSION_COOKIE))
    record(session=session, entry=_login_entry(request, result))
    if not result.ok:
        return _refused(result)
    assert result.row is not None and result.user is not None and result.cookie is not None
    payload = _public(result.user.id, result.user.username, result.user.role, result.row, settings)
    response = JSONResponse(content=payload.model_dump(mode="json"))
    response.set_cookie(SESSION_COOKIE, result.cookie, max_age=int(settings.session_absolute_hours * 3600),
                        path="/", httponly=True, samesite="strict", secure=_secure(request, settings))
    return response


def _secure(request: Request, settings: Settings) -> bool:
    """``cookie_secure`` when set; otherwise always in production (a TLS-terminating proxy in front makes the
    request look like http here), else only when the request came over https."""
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return settings.production or request.url.scheme == "https"


def _refusal(result: SignIn) -> tuple[int, str]:
    if result.retry_after:
        return 429, f"too many failed sign-ins: try again in {result.retry_after} s"
    return 401, "wrong username or password"  # the same for an unknown user, a wrong password, a disabled one


def _refused(result: SignIn) -> JSONResponse:
    status, detail = _refusal(result)
    headers = ({"Retry-After": str(result.retry_after)} if result.retry_after
               else {"WWW-Authenticate": 'Bearer realm="wardwatch"'})
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _login_entry(request: Request, result: SignIn) -> AuditLog:
    """Sign-ins are audited, refused ones with the username that was tried."""
    status, detail = (200, None) if result.ok else _refusal(result)
    entry = audit_entry(principal=None, target=audit_target(request), info=request_info(request),
                        outcome=Outcome.allowed if result.ok else Outcome.refused, status_code=status,
                        username=result.username, detail=detail)
    if result.ok and result.user is not None:
        entry.user_id, entry.role = result.user.id, result.user.role.value
    return entry


@router.get("/session", response_model=SessionPublic)
def read_session(access: Authenticated, session: SessionDep, settings: SettingsDep) -> SessionPublic:
    """Who this request acts for, what it may do, and (for a browser session) its CSRF token and expiry."""
    principal = access.principal
    row = get_session(session=session, row_id=principal.session_id) if principal.session_id else None
    return _public(principal.user_id, principal.username, principal.role, row, settings,
                   scopes=principal.scopes, token_id=principal.token_id)


@router.delete("/session", status_code=204)
def logout(request: Request, access: Authenticated, session: SessionDep) -> Response:
    """Sign out: the session ends on the server (the cookie is worthless from now on) and is cleared."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if access.principal.via_cookie and cookie:
        end_session(session=session, session_id=cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _public(user_id: int, username: str, role: Role, row: UserSession | None, settings: Settings, *,
            scopes: frozenset[Scope] | None = None, token_id: int | None = None) -> SessionPublic:
    idle = timedelta(minutes=settings.session_idle_minutes)
    return SessionPublic(
        user=UserPublic(id=user_id, username=username, role=role),
        auth="session" if row is not None else "token",
        csrf_token=row.csrf_token if row is not None else None,
        expires_at=row.expires_at if row is not None else None,
        idle_expires_at=idle_expiry(row, idle) if row is not None else None,
        token_id=token_id, scopes=sorted(s.value for s in scopes) if scopes is not None else None,
        permissions=permissions_of(role, scopes),
    )
