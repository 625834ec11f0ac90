"""The audit trail: reads, writes and refusals are recorded with who, what, which record, outcome, address and
request ID; the entry commits with its action or not at all; the database itself refuses to change or delete
an entry (SQLite and PostgreSQL triggers); GET /audit filters and pages, for auditors and admins only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError

from server.db.access_tables import AuditLog
from server.db.base import utcnow
from server.db.session import make_engine
from tests.accounts import bearer
from tests.server.access import seed


def _entries(app, **filters) -> list[dict]:  # type: ignore[no-untyped-def]
    answer = TestClient(app).get("/api/v1/audit", params={"limit": 1000, **filters}, headers=bearer(app, "auditor"))
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["data"] if (e["action"], e["outcome"]) != ("read_audit", "allowed")]


def test_reads_writes_and_refusals_are_recorded(app) -> None:  # type: ignore[no-untyped-def]
    rows = seed(app)
    clinician = bearer(app, "clinician")
    client = TestClient(app, client=("10.1.2.3", 5555))
    read = client.get(f"/api/v1/events/{rows.event_id}/clip.mp4", headers=clinician)
    assert read.status_code == 200
    wrote = client.post(f"/api/v1/events/{rows.event_id}/review", json={"decision": "confirmed"}, headers=clinician)
    assert wrote.status_code == 200
    anonymous = client.get(f"/api/v1/recordings/{rows.recording_id}")
    forbidden = client.get("/api/v1/audit", headers=clinician)
    unknown = client.get("/api/v1/events/424242", headers=clinician)
    assert (anonymous.status_code, forbidden.status_code, unknown.status_code) == (401, 403, 404)
    listed = client.get("/api/v1/events", params={"recording": rows.recording_id}, headers=clinician)

    entries = {e["request_id"]: e for e in _entries(app)}
    clip = entries[read.headers["x-request-id"]]
    assert clip["action"] == "read_event_clip" and clip["object_type"] == "event"
    assert clip["object_id"] == str(rows.event_id) and clip["outcome"] == "allowed"
    assert clip["username"] == "test-clinician" and clip["role"] == "clinician" and clip["token_id"]
    assert clip["client_address"] == "10.1.2.3"
    review = entries[wrote.headers["x-request-id"]]
    assert review["action"] == "post_review" and review["outcome"] == "allowed"
    assert entries[listed.headers["x-request-id"]]["detail"] == f"recording={rows.recording_id}"
    refused = [entries[r.headers["x-request-id"]] for r in (anonymous, forbidden, unknown)]
    assert [(e["outcome"], e["status_code"]) for e in refused] == [("refused", 401), ("refused", 403),
                                                                   ("refused", 404)]
    assert refused[0]["username"] is None and refused[0]["object_id"] == str(rows.recording_id)
    assert refused[1]["action"] == "read_audit" and refused[2]["object_id"] == "424242"
    # reading the trail is itself in the trail
    assert any(e["action"] == "read_audit" for e in TestClient(app).get(
        "/api/v1/audit", headers=bearer(app, "admin")).json()["data"])


def test_every_response_has_a_request_id(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    ids = {client.get(path).headers["x-request-id"] for path in ("/api/v1/health", "/api/v1/events", "/", "/nope")}
    assert len(ids) == 4 and all(len(i) == 32 for i in ids)
    assert client.get("/api/v1/health", headers={"X-Request-ID": "forged"}).headers["x-request-id"] != "forged"


def test_the_entry_commits_with_its_action_or_not_at_all(app) -> None:  # type: ignore[no-untyped-def]
    """Only the audit insert fails (the review's own writes would succeed): the review must not be stored and
    the answer must be an error, never a 200 for an unaudited change."""
    rows = seed(app)
    clinician = bearer(app, "clinician")
    failing = TestClient(app, raise_server_exceptions=False)

    engine = app.state.session_factory.kw["bind"]

    def broken_audit(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        # the entry is one INSERT statement (server.services.audit.record), whatever builds it
        if statement.startswith("INSERT INTO audit_log") and "post_review" in str(parameters):
            raise RuntimeError("audit table went away")

    event.listen(engine, "before_cursor_execute", broken_audit)
    try:
        answer = failing.post(f"/api/v1/events/{rows.event_id}/review", json={"decision": "rejected"},
                              headers=clinician)
    finally:
        event.remove(engine, "before_cursor_execute", broken_audit)
    assert answer.status_code >= 500
    event_now = TestClient(app).get(f"/api/v1/events/{rows.event_id}", headers=clinician).json()
    assert event_now["status"] == "flagged" and event_now["reviewer"] is None
    assert not [e for e in _entries(app, action="post_review")]  # neither the review nor its entry


def test_allowed_reads_of_jobs_users_and_tokens_are_recorded_with_status(app) -> None:  # type: ignore[no-untyped-def]
    rows = seed(app)
    admin = bearer(app, "admin")
    client = TestClient(app)
    answers = [client.get(path, headers=admin) for path in
               ("/api/v1/jobs", f"/api/v1/jobs/{rows.job_id}", "/api/v1/users", "/api/v1/tokens")]
    assert [a.status_code for a in answers] == [200] * 4
    entries = {e["request_id"]: e for e in _entries(app)}
    recorded = [entries[a.headers["x-request-id"]] for a in answers]
    assert [e["action"] for e in recorded] == ["read_jobs", "read_job", "read_users", "read_tokens"]
    assert recorded[1]["object_type"] == "job" and recorded[1]["object_id"] == str(rows.job_id)
    assert {(e["outcome"], e["status_code"]) for e in recorded} == {("allowed", 200)}
    review = client.post(f"/api/v1/events/{rows.event_id}/review", headers=bearer(app, "clinician"),
                         json={"decision": "relabelled", "label": "bed_exit", "note": "Mrs Smith, bed 4"})
    assert review.status_code == 200
    (entry,) = _entries(app, action="post_review")
    assert entry["detail"] == "decision=relabelled label=bed_exit" and entry["status_code"] == 200
    assert "Smith" not in str(entry)  # the free-text note stays out of the trail


def test_every_queue_read_is_recorded(app) -> None:  # type: ignore[no-untyped-def]
    """The queue answers its pages itself (one validation, no second pass by FastAPI) and writes its entry as one
    INSERT (issue 12): still one entry per read, committed before the answer, naming the query it answered."""
    seed(app)
    client = TestClient(app)
    clinician = bearer(app, "clinician")
    queries = [{"limit": 1}, {"status": "flagged", "limit": 50}, {"label": "fall", "limit": 2}, {"limit": 1}] * 3
    answers = [client.get("/api/v1/events", params=query, headers=clinician) for query in queries]
    assert [a.status_code for a in answers] == [200] * len(queries)
    entries = {e["request_id"]: e for e in _entries(app, action="read_events")}
    assert len(entries) == len(queries)
    for query, answer in zip(queries, answers, strict=True):
        entry = entries[answer.headers["x-request-id"]]
        assert (entry["outcome"], entry["status_code"], entry["object_type"]) == ("allowed", 200, "event")
        assert entry["detail"] == "&".join(f"{key}={value}" for key, value in query.items())
        assert entry["username"] == "test-clinician" and entry["token_id"] is not None


def test_a_rejected_upload_is_recorded_once_with_its_reason(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video\n" * 20)
    with bogus.open("rb") as handle:
        answer = TestClient(app).post("/api/v1/recordings", files={"file": ("notes.mp4", handle)},
                                      headers=bearer(app, "clinician"))
    assert answer.status_code == 422
    (entry,) = _entries(app, action="upload_recording")
    assert entry["outcome"] == "refused" and entry["status_code"] == 422 and entry["object_type"] == "recording"
    assert entry["object_id"] and "video" in entry["detail"].lower()


def test_the_database_refuses_to_change_the_trail(app, db_url: str) -> None:  # type: ignore[no-untyped-def]
    TestClient(app).get("/api/v1/events")  # one refused (401) entry
    engine = make_engine(db_url)
    try:
        statements = ["UPDATE audit_log SET outcome = 'allowed'", "DELETE FROM audit_log"]
        if engine.dialect.name == "postgresql":
            statements.append("TRUNCATE audit_log")
        for statement in statements:
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(AuditLog)) >= 1
            assert conn.scalar(select(AuditLog.outcome)) == "refused"
    finally:
        engine.dispose()


def test_filters_and_keyset_pages(app) -> None:  # type: ignore[no-untyped-def]
    rows = seed(app)
    clinician, auditor = bearer(app, "clinician"), bearer(app, "auditor")
    client = TestClient(app)
    for _ in range(3):
        client.get(f"/api/v1/events/{rows.event_id}", headers=clinician)
        client.get(f"/api/v1/recordings/{rows.recording_id}", headers=auditor)
    everything = _entries(app)

    def pages(**filters) -> list[dict]:  # type: ignore[no-untyped-def]
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **filters} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/v1/audit", params=params, headers=auditor).json()
            seen += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    walked = pages(object_type="event")
    assert [e["id"] for e in walked] == sorted({e["id"] for e in walked}, reverse=True)  # newest first, no dupes
    assert len(walked) == 3 and all(e["object_id"] == str(rows.event_id) for e in walked)
    assert len(pages(user="TEST-CLINICIAN")) == 3
    assert {e["action"] for e in pages(object_type="recording", object_id=str(rows.recording_id))} == {
        "read_recording"}
    assert pages(outcome="refused") == []
    later = (utcnow() + timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/audit", params={"since": later}, headers=auditor).json()["data"] == []
    until = client.get("/api/v1/audit", params={"until": later, "count": "true", "limit": 1000},
                       headers=auditor).json()
    assert until["count"] == len(until["data"]) >= len(everything)
    assert client.get("/api/v1/audit", headers=auditor).json()["count"] is None  # counted only on request
    naive = client.get("/api/v1/audit", params={"since": "2026-01-01T00:00:00"}, headers=auditor)
    assert naive.status_code == 422
    for hostile in ("' OR 1=1 --", "event; DROP TABLE audit_log"):
        assert client.get("/api/v1/audit", params={"object_type": hostile}, headers=auditor).json()["data"] == []
    assert client.get("/api/v1/audit", params={"limit": 2000}, headers=auditor).status_code == 422


def test_insert_or_replace_cannot_overwrite_an_entry(app, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """SQLite's REPLACE deletes the old row without firing DELETE triggers; PostgreSQL's upsert updates it."""
    TestClient(app).get("/api/v1/events")  # one refused (401) entry
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            first_id, before = conn.execute(select(AuditLog.id, AuditLog.outcome).order_by(AuditLog.id)).first()
        if engine.dialect.name == "sqlite":
            statement = ("INSERT OR REPLACE INTO audit_log (id, at, action, outcome) "
                         "VALUES (:id, '2020-01-01 00:00:00', 'forged', 'allowed')")
        else:
            statement = ("INSERT INTO audit_log (id, at, action, outcome) VALUES (:id, now(), 'forged', 'allowed') "
                         "ON CONFLICT (id) DO UPDATE SET action = 'forged', outcome = 'allowed'")
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement), {"id": first_id})
        with engine.connect() as conn:
            row = conn.execute(select(AuditLog.action, AuditLog.outcome).where(AuditLog.id == first_id)).one()
            assert row.outcome == before == "refused" and row.action != "forged"
    finally:
        engine.dispose()


def test_ids_are_64_bit(app, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """The trail and the sign-in tries grow with every request: past 2**31 rows a 32-bit id would overflow."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            big = 2**40
            conn.execute(text("INSERT INTO audit_log (id, at, action, outcome) VALUES (:id, :at, 'big', 'allowed')"),
                         {"id": big, "at": utcnow()})
            conn.execute(text("INSERT INTO login_attempt (id, username, client_address, succeeded, at) "
                              "VALUES (:id, 'u', 'a', false, :at)"), {"id": big, "at": utcnow()})
        with engine.connect() as conn:
            assert conn.scalar(select(func.max(AuditLog.id))) == big
    finally:
        engine.dispose()
