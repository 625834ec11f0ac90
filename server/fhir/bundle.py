"""Searchset Bundles: a page of reviewed events (each Observation with its Media and the model's Device) or of
audit entries, with ``total``, ``self`` / ``next`` links and stable ``urn:uuid`` full URLs.

Every page is self-contained: each reference in it resolves to an entry of the same page (a Device used by
several pages is repeated in each), so a receiver can process pages one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from server.db.access_tables import AuditLog
from server.db.base import utcnow
from server.db.tables import Event, EventSource, ModelVersion
from server.fhir.audit_event import audit_event
from server.fhir.device import model_device
from server.fhir.media import clip_media, explanation_media
from server.fhir.observation import event_observation, patient_subject, retracted_observation
from server.fhir.systems import FhirSystems


@dataclass(frozen=True)
class PageLinks:
    """Where this page is and where the next one is (None on the last page), as absolute URLs."""

    self_url: str
    next_url: str | None
    total: int


def reference(resource: Resource, systems: FhirSystems) -> Reference:
    return Reference(reference=full_url(resource, systems))


def full_url(resource: Resource, systems: FhirSystems) -> str:
    return systems.full_url(f"{resource.get_resource_type()}/{resource.id}")


def _entry(resource: Resource, systems: FhirSystems, mode: str) -> BundleEntry:
    return BundleEntry(fullUrl=full_url(resource, systems), resource=resource, search=BundleEntrySearch(mode=mode))


def searchset(entries: Iterable[BundleEntry], links: PageLinks) -> Bundle:
    """``total`` counts the matches of the whole search (not this page, and never the included resources)."""
    link = [BundleLink(relation="self", url=links.self_url)]
    if links.next_url is not None:
        link.append(BundleLink(relation="next", url=links.next_url))
    return Bundle(type="searchset", timestamp=utcnow(), total=links.total, link=link, entry=list(entries) or None)


def observation_bundle(events: Sequence[Event], models: Mapping[int, ModelVersion], *, systems: FhirSystems,
                       api_base: str, links: PageLinks, retracted: Mapping[int, datetime] | None = None) -> Bundle:
    """``events``: reviewed, with recording and explanations loaded; ``models``: every model they name.
    ``api_base``: the absolute ``.../api/v1`` the media URLs start with. ``retracted``: events among them that
    are no longer findings, with when that happened (an ``entered-in-error`` Observation, nothing else)."""
    entries: list[BundleEntry] = []
    devices: dict[int, Reference] = {}
    for event in events:
        if retracted and event.id in retracted:
            entries.append(_entry(retracted_observation(event, systems=systems, retracted_at=retracted[event.id]),
                                  systems, "match"))
            continue
        device_ref = None
        if event.source != EventSource.clinician:  # a clinician's mark was observed by no model
            if event.model_version_id not in devices:
                device = model_device(models[event.model_version_id], systems=systems)
                devices[event.model_version_id] = reference(device, systems)
                entries.append(_entry(device, systems, "include"))
            device_ref = devices[event.model_version_id]
        subject = patient_subject(event.recording, systems)
        media = [clip] if (clip := clip_media(event, api_base=api_base, subject=subject)) else []
        for item in event.explanations if device_ref is not None else ():
            media += explanation_media(item, api_base=api_base, systems=systems, subject=subject, device=device_ref,
                                       started_at=event.recording.started_at)
        observation = event_observation(event, systems=systems, device=device_ref,
                                        media=[reference(m, systems) for m in media])
        entries.append(_entry(observation, systems, "match"))
        entries.extend(_entry(m, systems, "include") for m in media)
    return searchset(entries, links)


def audit_bundle(rows: Sequence[AuditLog], *, systems: FhirSystems, links: PageLinks) -> Bundle:
    return searchset((_entry(audit_event(row, systems=systems), systems, "match") for row in rows), links)
