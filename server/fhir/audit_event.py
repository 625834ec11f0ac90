"""An audit_log row as a FHIR ``AuditEvent`` (R4): who (user, role, API token, client address), what (the
action, i.e. the route's name, and the record it touched), when, and whether it was allowed.

Outcome codes (http://hl7.org/fhir/audit-event-outcome): allowed -> ``0`` success; refused -> ``4`` minor failure
(the request was turned away, "often equivalent to an HTTP 400 response"), or ``8`` serious failure when the
answer was a 5xx (e.g. the 503 of an audit trail that could not be written).
"""

from __future__ import annotations

import ipaddress

from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventAgentNetwork,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.reference import Reference

from server.db.access_tables import AuditLog, Outcome
from server.fhir.systems import (
    AUDIT_ENTITY_TYPE,
    AUDIT_EVENT_TYPE,
    DICOM,
    SECURITY_ROLE_TYPE,
    SECURITY_SOURCE_TYPE,
    FhirSystems,
)

# AuditEvent.action (http://hl7.org/fhir/audit-event-action): C create, R read, U update, D delete, E execute
# (a query, an export, signing in or out). Actions are route names; the ones that do not say it by their prefix:
_ACTIONS = {"export": "E", "login": "E", "logout": "E", "post_review": "U", "post_disable_user": "U",
            "post_activate": "U", "cancel_job": "U", "stop_stream": "U", "cli_users_disable": "U",
            "cli_tokens_revoke": "D", "upload_recording": "C", "watch_folder_import": "C", "health": "R",
            "ready": "R"}
_PREFIXES = (("read_", "R"), ("post_", "C"), ("create_", "C"), ("cli_", "C"), ("delete_", "D"))
# DICOM audit event types for what is not a REST call of a signed-in user.
_AUTHENTICATION = Coding(system=DICOM, code="110114", display="User Authentication")
_SIGN = {"login": Coding(system=DICOM, code="110122", display="Login"),
         "logout": Coding(system=DICOM, code="110123", display="Logout")}
_APPLICATION = Coding(system=DICOM, code="110100", display="Application Activity")
_REST = Coding(system=AUDIT_EVENT_TYPE, code="rest", display="RESTful Operation")
_MACHINE_NAME, _IP_ADDRESS = "1", "2"  # http://hl7.org/fhir/network-type
_APPLICATION_AGENT = CodeableConcept(coding=[Coding(system=DICOM, code="110150", display="Application")])
SYSTEM_ACTOR = "system:"  # usernames of entries no person made (server.cli_access, server.watcher)


def action_code(action: str) -> str | None:
    """C / R / U / D / E for a route name; None (AuditEvent.action is optional) when it cannot be told."""
    if action in _ACTIONS:
        return _ACTIONS[action]
    return next((code for prefix, code in _PREFIXES if action.startswith(prefix)), None)


def _type(action: str) -> Coding:
    if action in _SIGN:
        return _AUTHENTICATION
    if action.startswith(("cli_", "watch_")):
        return _APPLICATION
    return _REST


def outcome_code(row: AuditLog) -> str:
    if row.outcome == Outcome.allowed:
        return "0"
    return "8" if row.status_code is not None and row.status_code >= 500 else "4"


def _network_type(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return _MACHINE_NAME
    return _IP_ADDRESS


def _agents(row: AuditLog, systems: FhirSystems) -> list[AuditEventAgent]:
    """The user (or whoever tried to sign in, or nobody) is the requestor; an API token is a second agent,
    the application that acted for them."""
    network = (AuditEventAgentNetwork(address=row.client_address, type=_network_type(row.client_address))
               if row.client_address else None)
    if row.username and row.username.startswith(SYSTEM_ACTOR):  # the CLI, the watch folder: no person
        who = Reference(identifier=Identifier(system=systems.identifier("system-actor"), value=row.username),
                        display=row.username)
        kind = _APPLICATION_AGENT
    elif row.username:
        who = Reference(identifier=Identifier(system=systems.identifier("user"), value=row.username),
                        display=row.username)
        kind = CodeableConcept(coding=[Coding(system=SECURITY_ROLE_TYPE, code="humanuser", display="human user")])
    else:
        who, kind = Reference(display="anonymous"), None
    role = ([CodeableConcept(coding=[Coding(system=systems.code_system("user-role"), code=row.role)])]
            if row.role else None)
    agents = [AuditEventAgent(type=kind, role=role, who=who, altId=str(row.user_id) if row.user_id else None,
                              requestor=True, network=network)]
    if row.token_id is not None:
        token = Identifier(system=systems.identifier("api-token"), value=str(row.token_id))
        agents.append(AuditEventAgent(
            type=_APPLICATION_AGENT,
            who=Reference(identifier=token, display=f"API token {row.token_id}"), requestor=False))
    return agents


def _entity(row: AuditLog, systems: FhirSystems) -> AuditEventEntity:
    """The record touched (by identifier: our object types are not FHIR resources), with the request ID, the
    HTTP status and the entry's detail (query string, decision, what an export held)."""
    what = (Reference(identifier=Identifier(system=systems.identifier(row.object_type or "object"),
                                            value=row.object_id),
                      display=f"{row.object_type or 'object'} {row.object_id}")
            if row.object_id else None)
    details = [AuditEventEntityDetail(type=kind, valueString=value)
               for kind, value in (("request-id", row.request_id),
                                   ("http-status", str(row.status_code) if row.status_code is not None else None),
                                   ("detail", row.detail)) if value]
    return AuditEventEntity(what=what, description=row.object_type,
                            type=Coding(system=AUDIT_ENTITY_TYPE, code="2", display="System Object"),
                            detail=details or None)


def audit_event(row: AuditLog, *, systems: FhirSystems) -> AuditEvent:
    subtype = [Coding(system=systems.code_system("audit-action"), code=row.action, display=row.action)]
    if row.action in _SIGN:
        subtype.insert(0, _SIGN[row.action])
    refused = row.outcome == Outcome.refused
    return AuditEvent(
        id=f"audit-{row.id}",
        type=_type(row.action),
        subtype=subtype,
        action=action_code(row.action),
        recorded=row.at,
        outcome=outcome_code(row),
        outcomeDesc=(f"refused ({row.status_code}): {row.detail}" if row.detail else f"refused ({row.status_code})")
        if refused else None,
        agent=_agents(row, systems),
        source=AuditEventSource(observer=Reference(display="Wardwatch API"),
                                type=[Coding(system=SECURITY_SOURCE_TYPE, code="4", display="Application Server")]),
        entity=[_entity(row, systems)],
    )
