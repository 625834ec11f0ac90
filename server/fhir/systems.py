"""The URIs an export names things by: this installation's code systems and identifier systems, the standard
HL7 / DICOM ones, and stable ``urn:uuid`` full URLs for bundle entries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from server.settings import Settings

# Standard code systems (FHIR R4 terminology).
UCUM = "http://unitsofmeasure.org"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"


@dataclass(frozen=True)
class FhirSystems:
    """This installation's URIs, all under one base (``WARDWATCH_FHIR_SYSTEM_BASE``) so two installations
    never mint the same identifier for different records."""

    base: str
    label: str

    @classmethod
    def from_settings(cls, settings: Settings) -> FhirSystems:
        base = settings.fhir_system_base
        return cls(base=base, label=settings.fhir_label_system or f"{base}/CodeSystem/event-label")

    def code_system(self, name: str) -> str:
        """One of our own code systems: ``event-component``, ``explanation-method``, ``audit-action``,
        ``user-role``."""
        return f"{self.base}/CodeSystem/{name}"

    def identifier(self, kind: str) -> str:
        """The ``Identifier.system`` of one kind of record: ``event``, ``patient-ref``, ``user``, ``model-version``,
        ``checkpoint-sha256``, ``api-token``, or an audit entry's object type (``recording``, ``event``, ...)."""
        return f"{self.base}/NamingSystem/{kind}"

    def full_url(self, resource_id: str) -> str:
        """``urn:uuid:`` of a resource id (``Observation/event-12``): the same record gets the same full URL in
        every export of this installation, so a receiver can de-duplicate across pages and polls."""
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.base}/{resource_id}')}"
