"""A reviewed event as a FHIR ``Observation``: what was seen (the label after review), when (wall clock), in
whom (the pseudonymous patient reference), by which model and which clinician, with the model's score.

Why the score is a component and not ``valueQuantity``: the Observation's code is the clinician's finding,
while the score is the model's confidence in *its own* label, which a relabelled event no longer has; as the
Observation's value it would read as a measurement of the confirmed finding.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference

from server.db.tables import Event, EventSource, EventStatus, Recording
from server.fhir.systems import UCUM, FhirSystems

# Observation.status: a confirmed model finding is final; a relabelled one was changed by its reviewer.
STATUS = {EventStatus.confirmed: "final", EventStatus.relabelled: "amended"}
# Observation.method: how the finding came about (``event.source``).
METHOD = {EventSource.model: "flagged by the model, reviewed by a clinician",
          EventSource.clinician: "marked by a clinician on the recording"}


def observation_id(event_id: int) -> str:
    return f"event-{event_id}"


def label_concept(label: str, systems: FhirSystems) -> CodeableConcept:
    display = label.replace("_", " ")
    return CodeableConcept(coding=[Coding(system=systems.label, code=label, display=display)], text=display)


def patient_subject(recording: Recording, systems: FhirSystems) -> Reference | None:
    """A logical reference by identifier: Wardwatch holds no Patient resource, only the pseudonymous ID the
    hospital gave at upload, which its own systems resolve. No ID, no subject (never a guess)."""
    if not recording.patient_ref:
        return None
    return Reference(type="Patient",
                     identifier=Identifier(system=systems.identifier("patient-ref"), value=recording.patient_ref))


def _component(code: str, display: str, systems: FhirSystems, **value: object) -> ObservationComponent:
    concept = CodeableConcept(coding=[Coding(system=systems.code_system("event-component"), code=code,
                                             display=display)])
    return ObservationComponent(code=concept, **value)


def _unitless(value: float) -> Quantity:
    return Quantity(value=round(value, 4), unit="1", system=UCUM, code="1")


def _components(event: Event, systems: FhirSystems) -> list[ObservationComponent]:
    if event.source == EventSource.clinician:
        # The model flagged nothing here: no model label, and the score is the model's view of the marked range.
        out = [_component("model-score", "model's peak probability for the label over the marked range", systems,
                          valueQuantity=_unitless(event.peak_score))]
    else:
        out = [_component("model-label", "label flagged by the model", systems,
                          valueCodeableConcept=label_concept(event.label, systems)),
               _component("model-score", "model's peak probability for its label", systems,
                          valueQuantity=_unitless(event.peak_score))]
    started_at = event.recording.started_at
    if started_at is not None:
        out.append(_component("peak-time", "time of the peak score", systems,
                              valueDateTime=started_at + timedelta(seconds=event.peak_time)))
    agreement = next((e.agreement for e in event.explanations if e.agreement is not None), None)
    if agreement is not None:
        out.append(_component("explanation-agreement", "agreement of Grad-CAM and Guided Backprop (-1..1)",
                              systems, valueQuantity=_unitless(agreement)))
    return out


def _period(start: datetime | None, end: datetime | None) -> Period | None:
    return Period(start=start, end=end) if start is not None else None


def retracted_observation(event: Event, *, systems: FhirSystems, retracted_at: datetime) -> Observation:
    """An event that was a finding (and may have been exported) but no longer is: rejected on a later review,
    or its confirmation undone. ``entered-in-error`` under the same id tells a receiver to withdraw it; the
    code is the model's label, the only one that still stands."""
    return Observation(
        id=observation_id(event.id),
        meta={"lastUpdated": retracted_at},
        identifier=[Identifier(system=systems.identifier("event"), value=str(event.id))],
        status="entered-in-error",
        code=label_concept(event.label, systems),
        subject=patient_subject(event.recording, systems),
        effectivePeriod=_period(event.start_wall, event.end_wall),
    )


def method_concept(event: Event, systems: FhirSystems) -> CodeableConcept:
    source = EventSource(event.source or EventSource.model)
    return CodeableConcept(coding=[Coding(system=systems.code_system("event-source"), code=source.value,
                                          display=METHOD[source])], text=METHOD[source])


def event_observation(event: Event, *, systems: FhirSystems, device: Reference | None, media: list[Reference]
                      ) -> Observation:
    """``event`` must be confirmed or relabelled, with its recording and explanations loaded. ``device`` and
    ``media`` are references to the model's Device and the event's Media in the same bundle (no device for a
    clinician-added event: no model observed it)."""
    if event.status not in STATUS:
        raise ValueError(f"event {event.id} is {event.status.value}: only reviewed findings are exported")
    label = event.reviewed_label if event.status == EventStatus.relabelled and event.reviewed_label else event.label
    reviewer = (Reference(type="Practitioner", display=event.reviewer,
                          identifier=Identifier(system=systems.identifier("user"), value=event.reviewer))
                if event.reviewer else None)
    note = ([Annotation(text=event.note, authorString=event.reviewer, time=event.reviewed_at)]
            if event.note else None)
    return Observation(
        id=observation_id(event.id),
        meta={"lastUpdated": event.reviewed_at} if event.reviewed_at else None,
        identifier=[Identifier(system=systems.identifier("event"), value=str(event.id))],
        status=STATUS[event.status],
        code=label_concept(label, systems),
        subject=patient_subject(event.recording, systems),
        effectivePeriod=_period(event.start_wall, event.end_wall),
        issued=event.reviewed_at,
        performer=[reviewer] if reviewer else None,
        method=method_concept(event, systems),
        device=device,
        derivedFrom=media or None,
        note=note,
        component=_components(event, systems),
    )
