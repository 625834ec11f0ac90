"""FHIR R4 export (docs/fhir.md): a recording with events, reviewed through the API (confirmed, rejected,
relabelled, one left flagged), exported as a searchset Bundle that fhir.resources (R4B) parses; the Bundle
holds exactly the reviewed findings, with wall-clock periods, references that resolve inside each page and
media URLs that answer with the exporter's credentials; ``since`` and paging; who may export; the export is
audited, and the audit trail exports as AuditEvent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError
from sqlalchemy import select

from server.api.security import api_routes
from server.cli_access import CLI_ACTOR
from server.db.access_tables import AuditLog, Outcome
from server.db.session import session_scope
from server.db.tables import Event, Explanation, ModelState, ModelVersion, Recording, RecordingStatus
from server.fhir.audit_event import action_code, audit_event
from server.fhir.systems import FhirSystems
from server.services.audit import listing_detail
from server.settings import Settings
from tests.accounts import bearer

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
BUNDLE, AUDIT_EVENTS = "/api/v1/fhir/Bundle", "/api/v1/fhir/AuditEvent"
METHODS = ("grad_cam", "guided_backprop")
LABELS = "https://wardwatch.example.org/fhir/CodeSystem/event-label"


@dataclass(frozen=True)
class Ward:
    ids: dict[str, int]                 # confirmed, rejected, relabelled, flagged, bare -> event id
    offsets: dict[str, tuple[float, float]]
    files: dict[str, bytes]             # API path -> the bytes it serves
    model_id: int


def _write(data_dir: Path, relative: str, data: bytes, files: dict[str, bytes], api_path: str) -> str:
    (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / relative).write_bytes(data)
    files[api_path] = data
    return relative


def _build_ward(app: Any) -> Ward:
    """Rows as the pipeline writes them (``server.pipeline.store_event``): wall clock = the recording's
    ``started_at`` + the offset in seconds; a review clip and two explanations with PNG and MP4 overlays."""
    data_dir = app.state.settings.data_dir
    plan = {"confirmed": ("fall", 10.0, 14.5), "rejected": ("bed_exit", 30.0, 33.0),
            "relabelled": ("fall", 50.25, 56.0), "flagged": ("rhythmic_movement", 70.0, 72.0),
            "bare": ("fall", 5.0, 7.0)}
    ids, files = {}, {}
    with session_scope(app.state.session_factory) as session:
        model = session.scalars(select(ModelVersion).where(ModelVersion.state == ModelState.active)).one()
        ward = Recording(source="ward.mp4", patient_ref="p-4711", room="12", started_at=START,
                         status=RecordingStatus.scored)
        bare = Recording(source="nowhere.mp4", status=RecordingStatus.scored)  # no patient, no wall clock
        session.add_all([ward, bare])
        session.flush()
        for name, (label, start, end) in plan.items():
            recording = bare if name == "bare" else ward
            wall = recording.started_at
            event = Event(recording_id=recording.id, label=label, start=start, end=end,
                          start_wall=wall + timedelta(seconds=start) if wall else None,
                          end_wall=wall + timedelta(seconds=end) if wall else None,
                          peak_score=0.8731, peak_time=start + 1.0, model_version_id=model.id,
                          key_frame_time=start + 1.0)
            session.add(event)
            session.flush()
            folder = f"media/events/{event.id}"
            event.clip_path = _write(data_dir, f"{folder}/clip.mp4", b"\x00\x00\x00\x18ftyp" + name.encode(),
                                     files, f"/api/v1/events/{event.id}/clip.mp4")
            for number, method in enumerate(METHODS):
                item = Explanation(event_id=event.id, method=method, key_frame_time=start + 1.0,
                                   overlay_path="", agreement=0.42 if number == 0 else None)
                session.add(item)
                session.flush()
                base = f"/api/v1/explanations/{item.id}"
                item.overlay_path = _write(data_dir, f"{folder}/{method}.png", b"\x89PNG" + method.encode(),
                                           files, f"{base}/overlay.png")
                item.video_path = _write(data_dir, f"{folder}/{method}.mp4", b"\x00\x00\x00\x18ftyp" +
                                         method.encode(), files, f"{base}/overlay.mp4")
            ids[name] = event.id
        model_id = model.id
    return Ward(ids, {name: (start, end) for name, (_, start, end) in plan.items()}, files, model_id)


@pytest.fixture
def ward(app: Any) -> Ward:
    """The events reviewed through the API by a clinician; ``flagged`` is left unreviewed."""
    rows = _build_ward(app)
    client, clinician = TestClient(app), bearer(app, "clinician")
    reviews = {"confirmed": {"decision": "confirmed", "note": "steadied by the nurse"},
               "rejected": {"decision": "rejected", "note": "a visitor"},
               "relabelled": {"decision": "relabelled", "label": "bed_exit", "note": "sat up and left the bed"},
               "bare": {"decision": "confirmed"}}
    for name, review in reviews.items():
        answer = client.post(f"/api/v1/events/{rows.ids[name]}/review", json=review, headers=clinician)
        assert answer.status_code == 200, answer.text
    return rows


def _export(client: TestClient, headers: dict[str, str], url: str = BUNDLE, **params: Any) -> dict[str, Any]:
    """GET a FHIR export; check it is FHIR JSON that fhir.resources parses; return the JSON."""
    answer = client.get(url, params=params or None, headers=headers)  # params={} would drop url's own query
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/fhir+json"
    document = answer.json()
    bundle = Bundle.model_validate(document)
    assert bundle.type == "searchset" and bundle.total is not None
    for entry in bundle.entry or []:
        assert type(entry.resource) in (Observation, Media, Device, AuditEvent)
    return document


def _resources(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in document.get("entry", []) if e["resource"]["resourceType"] == kind]


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _by_full_url(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = document.get("entry", [])
    urls = [e["fullUrl"] for e in entries]
    assert len(urls) == len(set(urls)), "a resource appears twice in one page"
    return {e["fullUrl"]: e["resource"] for e in entries}


def _assert_self_contained(document: dict[str, Any]) -> None:
    resolved = _by_full_url(document)
    for reference in _references(document):
        assert reference in resolved, f"{reference} does not resolve inside the bundle"


def _event_id(observation: dict[str, Any]) -> int:
    (identifier,) = observation["identifier"]
    assert identifier["system"] == "https://wardwatch.example.org/fhir/NamingSystem/event"
    return int(identifier["value"])


def _component(observation: dict[str, Any], code: str) -> dict[str, Any] | None:
    return next((c for c in observation["component"] if c["code"]["coding"][0]["code"] == code), None)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_bundle_holds_exactly_the_reviewed_findings(app: Any, ward: Ward) -> None:
    document = _export(TestClient(app), bearer(app, "clinician"))
    observations = {_event_id(o): o for o in _resources(document, "Observation")}
    ids = ward.ids
    assert set(observations) == {ids["confirmed"], ids["relabelled"], ids["bare"]}
    assert document["total"] == 3
    _assert_self_contained(document)
    resolved = _by_full_url(document)

    confirmed, relabelled, bare = (observations[ids[n]] for n in ("confirmed", "relabelled", "bare"))
    assert (confirmed["status"], relabelled["status"], bare["status"]) == ("final", "amended", "final")
    assert confirmed["code"]["coding"] == [{"system": LABELS, "code": "fall", "display": "fall"}]
    assert relabelled["code"]["coding"][0]["code"] == "bed_exit"  # the clinician's label ...
    model_label = _component(relabelled, "model-label")["valueCodeableConcept"]
    assert model_label["coding"][0]["code"] == "fall"  # ... and the model's
    assert float(_component(confirmed, "model-score")["valueQuantity"]["value"]) == pytest.approx(0.8731)
    assert float(_component(confirmed, "explanation-agreement")["valueQuantity"]["value"]) == pytest.approx(0.42)

    for name, observation in (("confirmed", confirmed), ("relabelled", relabelled)):
        start, end = ward.offsets[name]
        period = observation["effectivePeriod"]
        assert _instant(period["start"]) == START + timedelta(seconds=start)
        assert _instant(period["end"]) == START + timedelta(seconds=end)
        assert _instant(_component(observation, "peak-time")["valueDateTime"]) == START + timedelta(seconds=start + 1)
        assert observation["subject"] == {"type": "Patient", "identifier": {
            "system": "https://wardwatch.example.org/fhir/NamingSystem/patient-ref", "value": "p-4711"}}
        assert observation["performer"][0]["identifier"]["value"] == "test-clinician"
        assert observation["issued"] == observation["meta"]["lastUpdated"]
    assert confirmed["note"][0]["text"] == "steadied by the nurse"
    assert relabelled["note"][0]["authorString"] == "test-clinician"
    # no patient reference: no subject; no wall clock: no period (never a guess)
    assert "subject" not in bare and "effectivePeriod" not in bare and "note" not in bare
    assert _component(bare, "peak-time") is None

    for observation in observations.values():
        device = resolved[observation["device"]["reference"]]
        assert device["resourceType"] == "Device"
        assert {"system": "https://wardwatch.example.org/fhir/NamingSystem/model-version",
                "value": str(ward.model_id)} in device["identifier"]
        media = [resolved[r["reference"]] for r in observation["derivedFrom"]]
        assert all(m["resourceType"] == "Media" and m["status"] == "completed" for m in media)
        event_id = _event_id(observation)
        urls = sorted(m["content"]["url"] for m in media)
        assert f"http://testserver/api/v1/events/{event_id}/clip.mp4" in urls
        assert len(urls) == 1 + 2 * len(METHODS)  # the clip, and a PNG and an MP4 per method
        overlays = [m for m in media if "modality" in m]
        assert sorted(m["modality"]["coding"][0]["code"] for m in overlays) == sorted(METHODS * 2)
        assert {m["content"]["contentType"] for m in overlays} == {"image/png", "video/mp4"}
        assert all(resolved[m["device"]["reference"]] is device for m in overlays)
        assert any("Grad-CAM" in m["content"]["title"] for m in overlays)
    assert len(_resources(document, "Device")) == 1  # one model version, included once


def test_media_urls_answer_with_the_same_credentials(app: Any, ward: Ward) -> None:
    client, headers = TestClient(app), bearer(app, "auditor", scopes=["read:events"])
    document = _export(client, headers)
    media = _resources(document, "Media")
    assert media
    for item in media:
        url = item["content"]["url"]
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == item["content"]["contentType"]
        assert answer.content == ward.files[url.removeprefix("http://testserver")]
    assert client.get(media[0]["content"]["url"]).status_code == 401


def test_since_filters_on_the_review_time(app: Any, ward: Ward) -> None:
    client, headers = TestClient(app), bearer(app, "clinician")
    everything = _resources(_export(client, headers), "Observation")
    issued = sorted(_instant(o["issued"]) for o in everything)
    since = issued[1]
    expected = {_event_id(o) for o in everything if _instant(o["issued"]) >= since}
    assert len(expected) == 2
    for zone in (UTC, timezone(timedelta(hours=2))):  # the same instant in another zone
        page = _export(client, headers, since=since.astimezone(zone).isoformat())
        assert {_event_id(o) for o in _resources(page, "Observation")} == expected
        assert page["total"] == 2
    later = _export(client, headers, since=(issued[-1] + timedelta(seconds=1)).isoformat())
    assert later["total"] == 0 and "entry" not in later
    # a re-review moves the event past ``since``: a poller gets the change
    answer = client.post(f"/api/v1/events/{ward.ids['confirmed']}/review",
                         json={"decision": "relabelled", "label": "rhythmic_movement"}, headers=headers)
    assert answer.status_code == 200
    (changed,) = _resources(_export(client, headers, since=(issued[-1] + timedelta(microseconds=1)).isoformat()),
                            "Observation")
    assert _event_id(changed) == ward.ids["confirmed"] and changed["status"] == "amended"
    naive = client.get(BUNDLE, params={"since": "2026-03-01T08:00:00"}, headers=headers)
    assert naive.status_code == 422 and "needs a time zone" in str(naive.json()["detail"])


def test_a_withdrawn_finding_is_exported_as_entered_in_error(app: Any, ward: Ward) -> None:
    """A receiver that imported a confirmed event must hear when it stops being one: rejected on a later
    review, or its confirmation undone. The same Observation id comes again, ``entered-in-error``."""
    client, headers = TestClient(app), bearer(app, "clinician")
    before = {_event_id(o): o for o in _resources(_export(client, headers), "Observation")}
    assert before[ward.ids["confirmed"]]["status"] == "final"
    assert ward.ids["rejected"] not in before  # never a finding: never exported, nor retracted
    last = max(_instant(o["issued"]) for o in before.values())
    assert client.post(f"/api/v1/events/{ward.ids['confirmed']}/review", json={"decision": "rejected"},
                       headers=headers).status_code == 200
    assert client.post(f"/api/v1/events/{ward.ids['bare']}/review/undo", headers=headers).status_code == 200

    changed = _export(client, headers, since=(last + timedelta(microseconds=1)).isoformat())
    observations = {_event_id(o): o for o in _resources(changed, "Observation")}
    assert set(observations) == {ward.ids["confirmed"], ward.ids["bare"]} and changed["total"] == 2
    for event_id, observation in observations.items():
        assert observation["status"] == "entered-in-error"
        assert observation["id"] == before[event_id]["id"]  # the same resource, withdrawn
        assert _instant(observation["meta"]["lastUpdated"]) > last
        assert "performer" not in observation and "derivedFrom" not in observation
    _assert_self_contained(changed)
    everything = {_event_id(o): o["status"] for o in _resources(_export(client, headers), "Observation")}
    assert everything == {ward.ids["confirmed"]: "entered-in-error", ward.ids["bare"]: "entered-in-error",
                          ward.ids["relabelled"]: "amended"}


def test_paging_returns_every_item_once(app: Any, ward: Ward) -> None:
    client, headers = TestClient(app), bearer(app, "clinician")
    for size, pages_expected in ((1, 3), (2, 2), (3, 1)):
        seen: list[int] = []
        document = _export(client, headers, _count=size)
        pages = 1
        while True:
            assert document["total"] == 3
            assert len(_resources(document, "Observation")) <= size
            _assert_self_contained(document)  # every page on its own
            seen += [_event_id(o) for o in _resources(document, "Observation")]
            links = {link["relation"]: link["url"] for link in document["link"]}
            assert links["self"].startswith("http://testserver" + BUNDLE)
            if "next" not in links:
                break
            assert f"_count={size}" in links["next"]
            document = _export(client, headers, url=links["next"])
            pages += 1
        assert pages == pages_expected
        assert sorted(seen) == sorted({ward.ids["confirmed"], ward.ids["relabelled"], ward.ids["bare"]})
    for bad in (0, 201):
        assert client.get(BUNDLE, params={"_count": bad}, headers=headers).status_code == 422
    assert client.get(BUNDLE, params={"_cursor": 2**63}, headers=headers).status_code == 422


def test_who_may_export(app: Any, ward: Ward) -> None:
    client = TestClient(app)
    for url in (BUNDLE, AUDIT_EVENTS):
        anonymous = client.get(url)
        assert anonymous.status_code == 401 and anonymous.json()["detail"]
    no_read = client.get(BUNDLE, headers=bearer(app, "clinician", scopes=["review", "write:recordings"]))
    assert no_read.status_code == 403 and "read:events" in no_read.json()["detail"]
    assert client.get(AUDIT_EVENTS, headers=bearer(app, "clinician")).status_code == 403
    assert client.get(AUDIT_EVENTS, headers=bearer(app, "auditor", scopes=["read:events"])).status_code == 403
    _export(client, bearer(app, "auditor", scopes=["audit"]), url=AUDIT_EVENTS)
    _export(client, bearer(app, "admin"), url=AUDIT_EVENTS)
    _export(client, bearer(app, "auditor", scopes=["read:events"]))


def test_the_audit_cursor_spans_the_64_bit_ids_of_the_trail(app: Any) -> None:
    """Audit ids are BIGINT: an entry past 2**31 must be reachable through the AuditEvent pages (the ``_cursor``
    was capped at 2**31 - 1, so the ``next`` link of such a page answered 422); event cursors stay 32-bit."""
    big = 2**40
    with session_scope(app.state.session_factory) as session:
        session.add_all([AuditLog(id=big + 1, at=START, action="read_event", outcome=Outcome.allowed),
                         AuditLog(id=big, at=START, action="read_event", outcome=Outcome.allowed)])
    client, auditor = TestClient(app), bearer(app, "auditor", scopes=["audit"])
    window = {"since": START.isoformat(), "until": (START + timedelta(seconds=1)).isoformat()}
    first = _export(client, auditor, url=AUDIT_EVENTS, _count=1, **window)
    assert [a["id"] for a in _resources(first, "AuditEvent")] == [f"audit-{big + 1}"]
    (next_url,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert f"_cursor={big + 1}" in next_url
    second = _export(client, auditor, url=next_url)
    assert [a["id"] for a in _resources(second, "AuditEvent")] == [f"audit-{big}"]
    assert _audit_events(client, auditor, **window) == _resources(first, "AuditEvent") + _resources(second,
                                                                                                   "AuditEvent")
    assert client.get(AUDIT_EVENTS, params={"_cursor": 2**63 - 1}, headers=auditor).status_code == 200
    assert client.get(AUDIT_EVENTS, params={"_cursor": 2**63}, headers=auditor).status_code == 422
    assert client.get("/api/v1/audit", params={"cursor": big + 1}, headers=auditor).json()["data"][0]["id"] == big
    clinician = bearer(app, "clinician")
    assert client.get(BUNDLE, params={"_cursor": 2**31 - 1}, headers=clinician).status_code == 200
    assert client.get(BUNDLE, params={"_cursor": 2**31}, headers=clinician).status_code == 422


def _audit_events(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every AuditEvent of the export, following the next links."""
    out: list[dict[str, Any]] = []
    document = _export(client, headers, url=AUDIT_EVENTS, **params)
    while True:
        out += _resources(document, "AuditEvent")
        nxt = [link["url"] for link in document["link"] if link["relation"] == "next"]
        if not nxt:
            return out
        document = _export(client, headers, url=nxt[0])


def _detail(audit_event: dict[str, Any], kind: str) -> str | None:
    (entity,) = audit_event["entity"]
    return next((d["valueString"] for d in entity.get("detail", []) if d["type"] == kind), None)


def test_exports_are_audited_and_the_trail_exports_as_audit_events(app: Any, ward: Ward) -> None:
    before = datetime.now(UTC)
    client = TestClient(app, client=("10.1.2.3", 5555))
    clinician = bearer(app, "clinician")
    export = client.get(BUNDLE, params={"_count": 2}, headers=clinician)
    refused = client.get(AUDIT_EVENTS, headers=clinician)
    assert (export.status_code, refused.status_code) == (200, 403)
    exported = [_event_id(o) for o in _resources(export.json(), "Observation")]
    auditor = bearer(app, "auditor")

    trail = client.get("/api/v1/audit", params={"action": "export"}, headers=auditor).json()["data"]
    (entry,) = [e for e in trail if e["request_id"] == export.headers["x-request-id"]]
    assert entry["object_type"] == "event" and entry["outcome"] == "allowed" and entry["status_code"] == 200
    assert entry["detail"] == f"_count=2 exported 2 events: {exported[0]},{exported[1]}"

    events = _audit_events(client, auditor, since=before.isoformat(), _count=1)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)) >= 2
    by_request = {_detail(e, "request-id"): e for e in events}
    allowed = by_request[export.headers["x-request-id"]]
    assert allowed["outcome"] == "0" and allowed["action"] == "E"
    assert allowed["subtype"][0]["code"] == "export"
    assert _instant(allowed["recorded"]) >= before
    user, token = allowed["agent"]
    assert user["who"]["identifier"]["value"] == "test-clinician" and user["requestor"] is True
    assert user["role"][0]["coding"][0]["code"] == "clinician"
    assert user["network"] == {"address": "10.1.2.3", "type": "2"}
    assert token["type"]["coding"][0]["code"] == "110150" and token["requestor"] is False
    assert _detail(allowed, "detail").endswith(f"exported 2 events: {exported[0]},{exported[1]}")
    denied = by_request[refused.headers["x-request-id"]]
    assert denied["outcome"] == "4" and _detail(denied, "http-status") == "403"
    assert "clinician role may not" in denied["outcomeDesc"]
    assert denied["entity"][0]["description"] == "audit_log"
    # the reviews of the ward fixture happened before ``before``: ``until`` keeps to them
    reviews = _audit_events(client, auditor, until=before.isoformat())
    assert {e["subtype"][0]["code"] for e in reviews} == {"post_review"}
    (review,) = [e for e in reviews if e["entity"][0]["what"]["identifier"]["value"] == str(ward.ids["relabelled"])]
    assert review["action"] == "U" and "label=bed_exit" in _detail(review, "detail")
    # the auditor's exports are in the trail too
    own = client.get("/api/v1/audit", params={"action": "export", "object_type": "audit_log"}, headers=auditor)
    assert [e["outcome"] for e in own.json()["data"]].count("allowed") >= 3


def test_listing_detail_lists_what_fits_and_counts_the_rest() -> None:
    ids = list(range(100000, 100100))
    text = listing_detail("exported 100 events", ids)
    assert len(text) <= 256 and text.startswith("exported 100 events: 100000,100001")
    listed, more = text.split(": ")[1].split(" (+")
    assert len(listed.split(",")) + int(more.removesuffix(" more)")) == 100
    assert listing_detail("exported 2 events", [7, 9]) == "exported 2 events: 7,9"
    assert listing_detail("exported 0 events", []) == "exported 0 events"


def test_code_systems_are_settings(tmp_path: Path) -> None:
    systems = FhirSystems.from_settings(Settings(data_dir=tmp_path, fhir_system_base="https://ward.example/fhir/"))
    assert systems.label == "https://ward.example/fhir/CodeSystem/event-label"
    assert systems.full_url("Observation/event-1") != FhirSystems.from_settings(Settings(data_dir=tmp_path)).full_url(
        "Observation/event-1")
    own = FhirSystems.from_settings(Settings(data_dir=tmp_path, fhir_label_system="urn:oid:1.2.3.4"))
    assert own.label == "urn:oid:1.2.3.4"
    with pytest.raises(ValidationError, match="absolute URI"):
        Settings(data_dir=tmp_path, fhir_label_system="event-label")


def _row(**fields: Any) -> AuditLog:
    base = {"id": 7, "at": START, "action": "read_event", "outcome": Outcome.allowed}
    return AuditLog(**{**base, **fields})


def test_audit_event_mapping_of_system_actors_sign_ins_and_failures(tmp_path: Path) -> None:
    systems = FhirSystems.from_settings(Settings(data_dir=tmp_path))
    cli = audit_event(_row(action="cli_tokens_revoke", username=CLI_ACTOR, object_type="api_token", object_id="3",
                           status_code=503, outcome=Outcome.refused, detail="audit trail unavailable"),
                      systems=systems)
    assert (cli.outcome, cli.action, cli.type.code) == ("8", "D", "110100")  # a 5xx is a serious failure
    (agent,) = cli.agent
    assert agent.type.coding[0].code == "110150" and agent.who.identifier.value == CLI_ACTOR
    assert cli.outcomeDesc == "refused (503): audit trail unavailable"
    assert cli.entity[0].what.identifier.system.endswith("/NamingSystem/api_token")
    login = audit_event(_row(action="login", username="mallory", outcome=Outcome.refused, status_code=401,
                             client_address="ward-pc-12"), systems=systems)
    assert (login.type.code, login.subtype[0].code, login.outcome) == ("110114", "110122", "4")
    assert login.agent[0].network.type == "1"  # a name, not an IP address
    anonymous = audit_event(_row(outcome=Outcome.refused, status_code=401), systems=systems)
    assert anonymous.agent[0].who.display == "anonymous" and anonymous.agent[0].requestor is True
    AuditEvent.model_validate_json(cli.model_dump_json())


def test_every_route_has_an_audit_event_action(app: Any) -> None:
    """AuditEvent.action comes from the route's name: a new route whose name says nothing fails here."""
    names = {route.original_route.name for route in api_routes(app.routes)}
    assert {name for name in names if action_code(name) is None} == set()
