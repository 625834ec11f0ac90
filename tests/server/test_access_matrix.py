"""Every route of the app against every kind of caller: anonymous, each role (token and browser session), and
tokens of each scope. The expected answers are written out here, apart from ``server.security.permissions``,
so the table is checked rather than restated; a route missing from ROUTES fails the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.security import api_routes
from server.main import create_app
from server.settings import Settings
from tests.accounts import token_for
from tests.server.access import Seeded, seed, signed_in

PUBLIC, ANYONE = "public", "authenticated"
CLINICIAN, ADMIN, AUDITOR = "clinician", "admin", "auditor"
# permission -> (roles that have it, token scopes that grant it)
RULES = {
    "read_events": ({CLINICIAN, ADMIN, AUDITOR}, {"read:events"}),
    "write_recordings": ({CLINICIAN, ADMIN}, {"write:recordings"}),
    "review": ({CLINICIAN}, {"review"}),
    "read_models": ({CLINICIAN, ADMIN, AUDITOR}, {"read:events", "admin"}),
    "read_jobs": ({ADMIN}, {"admin"}),
    "manage_models": ({ADMIN}, {"admin"}),
    "read_audit": ({ADMIN, AUDITOR}, {"audit"}),
    "manage_users": ({ADMIN}, {"admin"}),
    "manage_webhooks": ({ADMIN}, {"admin"}),
    ANYONE: ({CLINICIAN, ADMIN, AUDITOR}, {"read:events", "write:recordings", "review", "admin", "audit"}),
}
# Sending events to a subscriber's URL exports them: manage_webhooks and read_events, both (a token needs
# `admin` and `read:events`; an admin's browser session has both).
EXPORT_BY_WEBHOOK = ("manage_webhooks", "read_events")
# (method, path) -> (permission, or a tuple of permissions all required, body). Bodies get past authorisation
# without lasting harm (a 4xx after it is fine: only 401/403 say "refused").
ROUTES = {
    ("GET", "/api/v1/health"): (PUBLIC, None),
    ("GET", "/api/v1/ready"): (PUBLIC, None),
    ("POST", "/api/v1/session"): (PUBLIC, {}),
    ("GET", "/api/v1/session"): (ANYONE, None),
    ("DELETE", "/api/v1/session"): (ANYONE, None),
    ("POST", "/api/v1/recordings"): ("write_recordings", {}),
    ("POST", "/api/v1/recordings/{recording_id}/stop"): ("write_recordings", None),
    ("GET", "/api/v1/recordings"): ("read_events", None),
    ("GET", "/api/v1/recordings/{recording_id}"): ("read_events", None),
    ("GET", "/api/v1/recordings/{recording_id}/timeline"): ("read_events", None),
    # a label no model has: past authorisation, then 422, nothing stored
    ("POST", "/api/v1/recordings/{recording_id}/events"): ("review", {"label": "no_such_class", "start": 0, "end": 1}),
    ("GET", "/api/v1/events"): ("read_events", None),
    ("GET", "/api/v1/events/{event_id}"): ("read_events", None),
    ("POST", "/api/v1/events/{event_id}/review"): ("review", {"decision": "confirmed"}),
    ("POST", "/api/v1/events/{event_id}/review/undo"): ("review", None),  # auditors and admins cannot undo either
    ("GET", "/api/v1/events/{event_id}/reviews"): ("read_events", None),
    ("GET", "/api/v1/events/{event_id}/explanations"): ("read_events", None),
    ("GET", "/api/v1/events/{event_id}/keyframe.png"): ("read_events", None),
    ("GET", "/api/v1/events/{event_id}/clip.mp4"): ("read_events", None),
    ("GET", "/api/v1/events/{event_id}/maps"): ("read_events", None),
    ("GET", "/api/v1/explanations/{explanation_id}/{media}"): ("read_events", None),
    ("GET", "/api/v1/jobs/{job_id}"): ("read_jobs", None),
    ("GET", "/api/v1/jobs"): ("read_jobs", None),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): ("manage_models", None),
    ("POST", "/api/v1/models/{model_id}/activate"): ("manage_models", None),
    ("GET", "/api/v1/models"): ("read_models", None),
    ("POST", "/api/v1/finetune-jobs"): ("manage_models", {"hyperparameters": {"epochz": 1}}),
    ("GET", "/api/v1/audit"): ("read_audit", None),
    ("GET", "/api/v1/fhir/Bundle"): ("read_events", None),
    ("GET", "/api/v1/fhir/AuditEvent"): ("read_audit", None),
    ("GET", "/api/v1/users"): ("manage_users", None),
    ("POST", "/api/v1/users"): ("manage_users", {}),
    ("POST", "/api/v1/users/{username}/disable"): ("manage_users", None),
    ("GET", "/api/v1/tokens"): ("manage_users", None),
    ("POST", "/api/v1/tokens"): ("manage_users", {}),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("manage_users", None),
    ("POST", "/api/v1/webhooks"): (EXPORT_BY_WEBHOOK, {}),
    ("GET", "/api/v1/webhooks"): ("manage_webhooks", None),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ("manage_webhooks", None),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): ("manage_webhooks", None),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (EXPORT_BY_WEBHOOK, None),
}
# Scopes each role can hold (a token asking for others is refused at creation).
ROLE_SCOPES = {CLINICIAN: ["read:events", "write:recordings", "review"],
               ADMIN: ["read:events", "write:recordings", "admin", "audit"],
               AUDITOR: ["read:events", "audit"]}


def _allowed(permission: str | tuple[str, ...], role: str, scopes: set[str] | None) -> bool:
    """Whether a caller passes: for every permission named, the role has it and (a token) a scope grants it."""
    needed = permission if isinstance(permission, tuple) else (permission,)
    return all(role in RULES[p][0] and (scopes is None or bool(scopes & RULES[p][1])) for p in needed)


@pytest.fixture
def app_and_rows(db_url: str, tmp_path: Path) -> Iterator[tuple[object, Seeded]]:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu"))
    with TestClient(app):
        yield app, seed(app)


def _url(path: str, rows: Seeded, unknown: bool = False) -> str:
    ids = {"recording_id": rows.recording_id, "event_id": rows.event_id, "explanation_id": rows.explanation_id,
           "job_id": rows.job_id, "model_id": rows.model_id, "webhook_id": rows.webhook_id,
           "delivery_id": rows.delivery_id}
    for name, value in ids.items():
        path = path.replace("{" + name + "}", "987654" if unknown else str(value))
    return path.replace("{media}", "overlay.png").replace("{username}", "nobody-here").replace("{token_id}", "987654")


def _call(client: TestClient, method: str, path: str, body: object, headers: dict | None = None):  # type: ignore[no-untyped-def]
    return client.request(method, path, json=body, headers=headers or {})


def test_every_route_is_in_the_table(app_and_rows) -> None:  # type: ignore[no-untyped-def]
    app, _rows = app_and_rows
    routes = {(method, r.path) for r in api_routes(app.routes) for method in r.methods}
    assert routes == set(ROUTES), f"add new routes to ROUTES: {routes ^ set(ROUTES)}"


def test_the_matrix(app_and_rows) -> None:  # type: ignore[no-untyped-def]
    app, rows = app_and_rows
    anonymous = TestClient(app)
    callers: list[tuple[str, str, set[str] | None, TestClient, dict[str, str]]] = []
    for role, scopes in ROLE_SCOPES.items():
        callers.append((f"{role} token (all its scopes)", role, set(scopes), anonymous,
                        {"Authorization": f"Bearer {token_for(app, role)}"}))
        for scope in scopes:
            callers.append((f"{role} token [{scope}]", role, {scope}, anonymous,
                            {"Authorization": f"Bearer {token_for(app, role, scopes=[scope])}"}))
        browser, csrf = signed_in(app, role)
        callers.append((f"{role} browser session", role, None, browser, {"X-CSRF-Token": csrf}))
    for (method, path), (permission, body) in ROUTES.items():
        url = _url(path, rows)
        answer = _call(anonymous, method, url, body)
        if permission == PUBLIC:
            assert answer.status_code not in (401, 403), (method, path, answer.text)
            continue
        assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer"), (method, path)
        assert answer.json()["detail"]
        if (method, path) == ("DELETE", "/api/v1/session"):
            continue  # signing out is tested in test_sessions (it would end the browser callers' sessions here)
        for label, role, scopes, client, headers in callers:
            allowed = _allowed(permission, role, scopes)
            answer = _call(client, method, url, body, headers)
            if allowed:
                assert answer.status_code not in (401, 403) and answer.status_code < 500, \
                    (label, method, path, answer.status_code, answer.text)
            else:
                assert answer.status_code == 403, (label, method, path, answer.status_code, answer.text)
                assert answer.json()["detail"]


def test_unknown_ids_are_404_without_hints(app_and_rows) -> None:  # type: ignore[no-untyped-def]
    """IDOR probing: any unknown id answers 404 for a caller who may use the route, and the same 403 as a
    known id for one who may not (so a refused caller learns nothing about which ids exist)."""
    app, rows = app_and_rows
    anonymous = TestClient(app)
    tokens = {role: {"Authorization": f"Bearer {token_for(app, role)}"} for role in ROLE_SCOPES}
    for (method, path), (permission, body) in ROUTES.items():
        if "{" not in path or permission in (PUBLIC, ANYONE):
            continue
        for role, headers in tokens.items():
            unknown = _call(anonymous, method, _url(path, rows, unknown=True), body, headers)
            known = _call(anonymous, method, _url(path, rows), body, headers)
            if _allowed(permission, role, None):
                assert unknown.status_code == 404, (role, method, path, unknown.text)
                assert "not found" in unknown.json()["detail"] or "not available" in unknown.json()["detail"]
            else:
                assert unknown.status_code == known.status_code == 403, (role, method, path)
                assert unknown.json() == known.json()
        anon_unknown = _call(anonymous, method, _url(path, rows, unknown=True), body)
        assert anon_unknown.status_code == 401 and anon_unknown.json() == _call(
            anonymous, method, _url(path, rows), body).json()


def test_static_pages_are_public(app_and_rows) -> None:  # type: ignore[no-untyped-def]
    app, _rows = app_and_rows
    anonymous = TestClient(app)
    for page in ("/", "/index.html", "/models.html", "/app.js", "/models.js", "/api.js", "/session.js",
                 "/styles.css"):
        assert anonymous.get(page).status_code == 200, page


def test_out_of_range_ids_are_422_never_500(app_and_rows) -> None:  # type: ignore[no-untyped-def]
    """IDs past 64 bits used to overflow the SQLite driver (500); they are refused at the edge now."""
    app, _rows = app_and_rows
    client = TestClient(app, raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {token_for(app, ADMIN)}"}
    clinician = {"Authorization": f"Bearer {token_for(app, CLINICIAN)}"}  # reviews are for clinicians
    huge = str(2**63)
    for (method, path), (permission, body) in ROUTES.items():
        if "_id}" not in path:
            continue
        url = re.sub(r"{\w+_id}", huge, path).replace("{media}", "overlay.png")
        caller = clinician if permission == "review" else headers
        answer = _call(client, method, url, body, caller)
        assert answer.status_code == 422, (method, url, answer.status_code)
    for query in ("cursor", "recording"):
        assert client.get("/api/v1/events", params={query: huge}, headers=headers).status_code == 422
    assert client.get("/api/v1/audit", params={"cursor": huge}, headers=headers).status_code == 422
    for fhir in ("/api/v1/fhir/Bundle", "/api/v1/fhir/AuditEvent"):
        assert client.get(fhir, params={"_cursor": huge}, headers=headers).status_code == 422
    assert client.post("/api/v1/finetune-jobs", json={"base_model_id": 2**63}, headers=headers).status_code == 422
