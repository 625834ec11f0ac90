"""What a request does, for the audit trail: the action and record read from the matched route (so no route
can forget to say it), the request ID and client address, and the entry for a refused request."""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker

from server.db.access_tables import Outcome
from server.db.session import session_scope
from server.services.audit import AuditTarget, RequestInfo, audit_entry, record

API_PREFIX = "/api/v1"
# The record type a route touches, from the first segment of its path.
OBJECT_TYPES = {"recordings": "recording", "events": "event", "explanations": "explanation",
                "models": "model_version", "jobs": "job", "finetune-jobs": "job", "audit": "audit_log",
                "session": "session", "users": "user", "tokens": "api_token", "webhooks": "webhook_subscription"}
# Under /fhir the record type follows from the FHIR resource asked for.
FHIR_OBJECT_TYPES = {"Bundle": "event", "AuditEvent": "audit_log"}
_PARAM = re.compile(r"{(\w+)")


def request_info(request: Request) -> RequestInfo:
    return RequestInfo(request_id=getattr(request.state, "request_id", None),
                       client_address=request.client.host if request.client else None)


def audit_target(request: Request) -> AuditTarget:
    """The action (the route's name) and the record it touches, read from the matched route: no route can
    forget to say what it does."""
    route = request.scope.get("route")
    template = route.path if isinstance(route, APIRoute) else request.url.path
    segments = template.removeprefix(API_PREFIX).strip("/").split("/")
    params = _PARAM.findall(template)
    object_id = str(request.path_params[params[0]]) if params and params[0] in request.path_params else None
    return AuditTarget(action=getattr(route, "name", None) or request.method.lower(),
                       object_type=_object_type(segments), object_id=object_id,
                       detail=request.url.query or None)


def _object_type(segments: list[str]) -> str | None:
    if segments[0] == "fhir" and len(segments) > 1:
        return FHIR_OBJECT_TYPES.get(segments[1])
    return OBJECT_TYPES.get(segments[0])


def record_refusal(request: Request, factory: sessionmaker[Session], status_code: int, detail: str) -> None:
    """Audit a refused request on a guarded route (401, 403, 404, ...), in a transaction of its own."""
    target: AuditTarget | None = getattr(request.state, "audit_target", None)
    access = getattr(request.state, "access", None)
    if target is None or (access is not None and access.refusal_recorded):
        return
    entry = audit_entry(principal=getattr(request.state, "principal", None), target=target,
                        info=request_info(request), outcome=Outcome.refused, status_code=status_code,
                        detail=detail)
    with session_scope(factory) as session:
        record(session=session, entry=entry)
