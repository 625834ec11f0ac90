"""Authorisation for routes: every API route declares a ``Guard(permission)`` (or ``Public``), and
``create_app`` refuses to start if one does not (``unguarded_routes``).

The guard authenticates the caller (``server.api.authentication``). Cookie-authenticated writes must also carry
the session's CSRF token in ``X-CSRF-Token``: a cross-site page can make the browser send the cookie but cannot
read the token. (The cookie is SameSite=Strict as well; the token is the second, independent lock.) Bearer
requests need no CSRF token, since a browser never adds an Authorization header on its own.

Audit: a guard records allowed audited reads (``AUDITED_READS``) and every write in the request's own database
session, after the route returned and before that session commits, so the entry commits with the action or not
at all and can name what the route made (``Access.note``) and the status code it answered; refusals are
recorded by ``record_refusal`` in a transaction of their own (the request's transaction has been rolled back by
then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute

from server.api.auditing import API_PREFIX, audit_target, request_info
from server.api.authentication import authenticate
from server.api.deps import BEFORE_COMMIT, SessionDep, SessionFactoryDep, SettingsDep, TokenCacheDep
from server.db.access_tables import AuditLog, Outcome
from server.db.session import session_scope
from server.security.credentials import same
from server.security.permissions import AUDITED_READS, EXPORT_BY_WEBHOOK, PERMISSIONS, Permission, is_allowed
from server.security.principal import Principal
from server.services.audit import AuditTarget, RequestInfo, audit_values, record

CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Access:
    """An authorised request: who, doing what, from where. Routes that run their own transactions (uploads)
    add ``entry()`` to it themselves; the others may ``note()`` what the entry should say (the record made,
    a decision) before the guard writes it, after the route returned."""

    principal: Principal
    target: AuditTarget
    info: RequestInfo
    refusal_recorded: bool = False  # set when a route recorded its own refusal in its own transaction
    recorded: bool = False          # the allowed entry is written (by the guard, or early by ``record_now``)
    object_id: object | None = None
    detail: str | None = None

    def entry(self, *, outcome: Outcome = Outcome.allowed, object_id: object | None = None,
              status_code: int | None = None, detail: str | None = None) -> AuditLog:
        """The entry as a row object, for a route that completes and records it itself (uploads)."""
        return AuditLog(**self.values(outcome=outcome, object_id=object_id, status_code=status_code,
                                      detail=detail))

    def values(self, *, outcome: Outcome = Outcome.allowed, object_id: object | None = None,
               status_code: int | None = None, detail: str | None = None) -> dict[str, Any]:
        target = self.target
        object_id = object_id if object_id is not None else self.object_id
        if object_id is not None:
            target = AuditTarget(target.action, target.object_type, str(object_id), target.detail)
        return audit_values(principal=self.principal, target=target, info=self.info, outcome=outcome,
                            status_code=status_code, detail=detail if detail is not None else self.detail)

    def note(self, *, object_id: object | None = None, detail: str | None = None) -> None:
        """What the allowed entry should name: the record the route made, what it decided (never free text
        a user typed, nor a secret)."""
        if object_id is not None:
            self.object_id = object_id
        if detail is not None:
            self.detail = detail

    def record_now(self, session: Session, status_code: int) -> None:
        """Write the allowed entry now, for a route that commits before it returns (so the entry is in the
        same transaction as the change)."""
        if not self.recorded:
            record(session=session, entry=self.values(status_code=status_code))
            self.recorded = True


def _declared_status(request: Request) -> int:
    route = request.scope.get("route")
    return getattr(route, "status_code", None) or 200


class Guard:
    """A route's access rule: ``access: Annotated[Access, Depends(Guard(Permission.read_events), scope="function")]``.

    ``permission=None``: any authenticated caller. Further permissions (``Guard(a, b)``) are all required too,
    each granted by the one table (a token needs a granting scope for each). ``own_transaction``: authenticate
    in a short transaction of its own and leave the audit entry to the route (for uploads, which must not hold
    a database transaction open while a large body arrives).
    """

    def __init__(self, permission: Permission | None, *also: Permission, own_transaction: bool = False) -> None:
        self.permission = permission
        self.permissions: tuple[Permission, ...] = tuple(p for p in (permission, *also) if p is not None)
        self.own_transaction = own_transaction

    def __call__(self, request: Request, session: SessionDep, factory: SessionFactoryDep,
                 settings: SettingsDep, tokens: TokenCacheDep) -> Access:
        target = audit_target(request)
        request.state.audit_target = target
        if self.own_transaction:
            with session_scope(factory) as short:
                principal = authenticate(request, short, settings, tokens)
        else:
            principal = authenticate(request, session, settings, tokens)
        request.state.principal = principal
        if principal.via_cookie and request.method in UNSAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER)
            if not sent or principal.csrf_token is None or not same(sent, principal.csrf_token):
                raise HTTPException(403, detail=f"missing or wrong {CSRF_HEADER} header "
                                                "(the session's token, from GET /api/v1/session)")
        for permission in self.permissions:
            if not principal.can(permission):
                raise HTTPException(403, detail=_forbidden(principal, permission))
        access = Access(principal=principal, target=target, info=request_info(request))
        request.state.access = access
        audited = request.method in UNSAFE_METHODS or any(p in AUDITED_READS for p in self.permissions)
        if audited and not self.own_transaction:
            # Run only when the route returned (an exception is audited as a refusal instead), in the request's
            # transaction just before it commits: the entry commits with the action or not at all.
            session.info.setdefault(BEFORE_COMMIT, []).append(
                lambda done: access.record_now(done, _declared_status(request)))
        return access


def _forbidden(principal: Principal, permission: Permission) -> str:
    """Says whether the role or the token's scopes are short, never anything about the record asked for."""
    if principal.scopes is not None and is_allowed(principal.role, None, permission):
        needed = " or ".join(sorted(s.value for s in PERMISSIONS[permission].scopes))
        return f"this token lacks the scope for this (needs {needed})"
    return f"the {principal.role.value} role may not do this"


async def public() -> None:
    """Marks a route as open to everyone (health, readiness, sign-in): the start-up check accepts it."""


Public = Depends(public)


def _guarded(dependant: object) -> bool:
    for dep in getattr(dependant, "dependencies", []):
        if isinstance(dep.call, Guard) or dep.call is public or _guarded(dep):
            return True
    return False


def route_guards(dependant: object) -> list[Guard]:
    """The Guards a route's dependencies name (none for a public route)."""
    found: list[Guard] = []
    for dep in getattr(dependant, "dependencies", []):
        if isinstance(dep.call, Guard):
            found.append(dep.call)
        found.extend(route_guards(dep))
    return found


def api_routes(routes: list[BaseRoute]) -> list[RouteContext]:
    """Every API route of the app, with its full path (FastAPI nests included routers)."""
    return [r for r in iter_route_contexts(routes)
            if isinstance(r.original_route, APIRoute) and (r.path or "").startswith(API_PREFIX)]


def unguarded_routes(routes: list[BaseRoute]) -> list[str]:
    """API routes with neither a Guard nor Public: ``create_app`` refuses to start with any."""
    return [f"{sorted(r.methods or ())} {r.path}" for r in api_routes(routes) if not _guarded(r.dependant)]


# Route signatures name what they need: ``def read_event(access: ReadEvents, ...)``.
ReadEvents = Annotated[Access, Depends(Guard(Permission.read_events), scope="function")]
WriteRecordings = Annotated[Access, Depends(Guard(Permission.write_recordings), scope="function")]
WriteRecordingsUpload = Annotated[Access, Depends(Guard(Permission.write_recordings, own_transaction=True),
                                                     scope="function")]
Review = Annotated[Access, Depends(Guard(Permission.review), scope="function")]
ReadModels = Annotated[Access, Depends(Guard(Permission.read_models), scope="function")]
ReadJobs = Annotated[Access, Depends(Guard(Permission.read_jobs), scope="function")]
ManageModels = Annotated[Access, Depends(Guard(Permission.manage_models), scope="function")]
ReadAudit = Annotated[Access, Depends(Guard(Permission.read_audit), scope="function")]
ManageUsers = Annotated[Access, Depends(Guard(Permission.manage_users), scope="function")]
ManageWebhooks = Annotated[Access, Depends(Guard(Permission.manage_webhooks), scope="function")]
ExportByWebhook = Annotated[Access, Depends(Guard(*EXPORT_BY_WEBHOOK), scope="function")]  # subscribe, retry
Authenticated = Annotated[Access, Depends(Guard(None), scope="function")]
