"""FHIR R4 export for hospital systems (docs/fhir.md): reviewed events as a searchset Bundle of Observation,
Media and Device, and the audit trail as AuditEvent. Answers are ``application/fhir+json``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from server.api.auditing import API_PREFIX
from server.api.deps import SessionDep, SettingsDep
from server.api.params import DatetimeQuery
from server.api.security import Access, ReadAudit, ReadEvents
from server.fhir.bundle import PageLinks, audit_bundle, observation_bundle
from server.fhir.systems import FhirSystems
from server.schemas import MAX_BIG_ID, MAX_ID
from server.services.audit import listing_detail
from server.services.fhir_export import ExportPage, audit_entries, model_versions, reviewed_events

router = APIRouter(prefix="/fhir", tags=["fhir"])
FHIR_JSON = "application/fhir+json"
MAX_EVENTS, MAX_AUDIT = 200, 1000  # an event brings up to 8 entries (Observation, clip, overlays, Device)
_OPAQUE = "from the previous page's `next` link; opaque"
# The cursor is the last id of the page: an event's (INTEGER) or an audit entry's (BIGINT, 64-bit).
EventCursor = Annotated[int | None, Query(alias="_cursor", ge=1, le=MAX_ID, description=_OPAQUE)]
AuditCursor = Annotated[int | None, Query(alias="_cursor", ge=1, le=MAX_BIG_ID, description=_OPAQUE)]
# The body is a FHIR resource (validated by fhir.resources when built), described here by its outline only: the
# full R4 schema is the standard's (https://hl7.org/fhir/R4/bundle.html), not ours to repeat.
_BUNDLE_OUTLINE = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["searchset"]},
        "total": {"type": "integer", "minimum": 0},
        "link": {"type": "array", "items": {"type": "object"}},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
}
_ANSWER = {200: {"content": {FHIR_JSON: {"schema": _BUNDLE_OUTLINE}}, "description": "a searchset Bundle"}}


class FhirResponse(Response):
    media_type = FHIR_JSON


def _links(request: Request, page: ExportPage) -> PageLinks:  # type: ignore[type-arg]
    next_url = (str(request.url.include_query_params(_cursor=page.next_cursor))
                if page.next_cursor is not None else None)
    return PageLinks(self_url=str(request.url), next_url=next_url, total=page.total)


def _note(access: Access, request: Request, kind: str, ids: Sequence[int]) -> None:
    """The entry names the query and what left: a count, and the ids as far as the column holds them."""
    head = f"{request.url.query} " if request.url.query else ""
    access.note(detail=listing_detail(f"{head}exported {len(ids)} {kind}", ids))


@router.get("/Bundle", name="export", response_class=FhirResponse, responses=_ANSWER)
def export_observations(request: Request, session: SessionDep, settings: SettingsDep, access: ReadEvents,
                        since: DatetimeQuery = None, cursor: EventCursor = None,
                        count: Annotated[int, Query(alias="_count", ge=1, le=MAX_EVENTS)] = 50) -> Response:
    """Confirmed (status final) and relabelled (amended) events reviewed at or after ``since``, each an
    Observation with its review clip and overlays (Media, URLs of this API) and its model (Device); events that
    were a finding once and no longer are (rejected later, confirmation undone) as ``entered-in-error``."""
    page = reviewed_events(session=session, since=since, cursor=cursor, limit=count)
    models = model_versions(session=session, ids={e.model_version_id for e in page.rows})
    api_base = str(request.base_url).rstrip("/") + API_PREFIX
    bundle = observation_bundle(page.rows, models, systems=FhirSystems.from_settings(settings), api_base=api_base,
                                links=_links(request, page), retracted=page.retracted)
    _note(access, request, "events", [e.id for e in page.rows])
    return FhirResponse(bundle.model_dump_json())


@router.get("/AuditEvent", name="export", response_class=FhirResponse, responses=_ANSWER)
def export_audit_events(request: Request, session: SessionDep, settings: SettingsDep, access: ReadAudit,
                        since: DatetimeQuery = None, until: DatetimeQuery = None, cursor: AuditCursor = None,
                        count: Annotated[int, Query(alias="_count", ge=1, le=MAX_AUDIT)] = 100) -> Response:
    """The audit trail in ``[since, until)`` as AuditEvent resources, newest first. The export is itself
    recorded in the trail."""
    page = audit_entries(session=session, since=since, until=until, cursor=cursor, limit=count)
    bundle = audit_bundle(page.rows, systems=FhirSystems.from_settings(settings), links=_links(request, page))
    _note(access, request, "audit entries", [row.id for row in page.rows])
    return FhirResponse(bundle.model_dump_json())
