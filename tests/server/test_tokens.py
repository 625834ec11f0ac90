"""API tokens, attacked: unknown, malformed, expired, revoked tokens and disabled users get 401; a token never
does more than its scopes or its user's role; only a digest is stored; an upload needs write:recordings."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from server.db.access_tables import ApiToken, Role, User
from server.db.base import utcnow
from server.db.session import session_scope
from server.services.api_tokens import create_token, revoke_token
from tests.accounts import ensure_user, token_for
from tests.server.access import seed

LOGIN_PATH = "/api/v1/session"


def _get(app, headers: dict[str, str], path: str = "/api/v1/events"):  # type: ignore[no-untyped-def]
    return TestClient(app).get(path, headers=headers)


def test_bad_tokens_are_401_with_a_challenge(app) -> None:  # type: ignore[no-untyped-def]
    good = token_for(app, "clinician")
    assert _get(app, {"Authorization": f"Bearer {good}"}).status_code == 200
    for header in (f"Bearer {good}x", "Bearer ww_unknown", f"Basic {good}", "Bearer ", good,
                   "Bearer ' OR 1=1 --"):
        answer = _get(app, {"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["www-authenticate"].startswith('Bearer realm="wardwatch"'), header
        assert good not in answer.text


def test_expired_and_revoked_tokens(app) -> None:  # type: ignore[no-untyped-def]
    expiring = token_for(app, "clinician", expires_days=1)
    revoked = token_for(app, "clinician")
    with session_scope(app.state.session_factory) as session:
        tokens = {t.token_hash: t for t in session.scalars(select(ApiToken))}
        tokens[hashlib.sha256(expiring.encode()).hexdigest()].expires_at = utcnow() - timedelta(seconds=1)
        revoke_token(session=session, token_id=tokens[hashlib.sha256(revoked.encode()).hexdigest()].id)
    for token in (expiring, revoked):
        answer = _get(app, {"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert answer.json()["detail"] == "invalid, expired or revoked token"


def test_only_a_digest_is_stored_and_never_shown_again(app) -> None:  # type: ignore[no-untyped-def]
    secret = token_for(app, "admin")
    with app.state.session_factory() as session:
        dump = " ".join(str(v) for row in session.execute(text("SELECT * FROM api_token")) for v in row)
    assert secret not in dump and hashlib.sha256(secret.encode()).hexdigest() in dump
    me = TestClient(app).get("/api/v1/session", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and secret not in me.text
    assert me.json()["auth"] == "token" and me.json()["csrf_token"] is None


def test_a_token_is_limited_by_its_scopes_and_its_users_role(app) -> None:  # type: ignore[no-untyped-def]
    rows = seed(app)
    ensure_user(app, "clinician")
    with session_scope(app.state.session_factory) as session, pytest.raises(ValueError, match="cannot use"):
        create_token(session=session, username="test-clinician", scopes=["admin"], expires_days=None)
    read_only = {"Authorization": f"Bearer {token_for(app, 'clinician', scopes=['read:events'])}"}
    client = TestClient(app)
    assert client.get(f"/api/v1/events/{rows.event_id}", headers=read_only).status_code == 200
    refused = client.post(f"/api/v1/events/{rows.event_id}/review", json={"decision": "confirmed"},
                          headers=read_only)
    assert refused.status_code == 403 and "needs review" in refused.json()["detail"]

    admin_token = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['admin'])}"}
    assert client.get("/api/v1/jobs", headers=admin_token).status_code == 200
    with session_scope(app.state.session_factory) as session:  # the admin becomes an auditor
        session.execute(update(User).where(User.username == "test-admin").values(role=Role.auditor))
    assert client.get("/api/v1/jobs", headers=admin_token).status_code == 403  # the role caps the old token


def test_upload_needs_write_recordings(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reader = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['read:events'])}"}
    video = tmp_path / "x.mp4"
    video.write_bytes(b"\x00" * 4096)
    client = TestClient(app)
    for headers in (reader, {}):
        with video.open("rb") as handle:
            answer = client.post("/api/v1/recordings", files={"file": ("x.mp4", handle)}, headers=headers)
        assert answer.status_code == (403 if headers else 401), answer.text
        assert client.post("/api/v1/recordings", json={"url": "tcp://127.0.0.1:9"}, headers=headers
                           ).status_code == (403 if headers else 401)
    incoming = app.state.settings.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.rglob("*"))  # refused before a byte reached the disk
    assert client.get("/api/v1/recordings", headers=reader).json()["count"] == 0
    writer = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['write:recordings'])}"}
    with video.open("rb") as handle:
        bad = client.post("/api/v1/recordings", files={"file": ("x.mp4", handle)}, headers=writer)
    assert bad.status_code == 422  # past authorisation: refused for what it is, not for who sent it


def test_admins_manage_users_and_tokens_over_rest(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['admin'])}"}
    weak = client.post("/api/v1/users", json={"username": "dr.kim", "password": "tooshort", "role": "clinician"},
                       headers=admin)
    assert weak.status_code == 422 and "tooshort" not in weak.text  # a rejected password is not echoed
    made = client.post("/api/v1/users", json={"username": "Dr.Kim", "password": "a long enough one",
                                              "role": "clinician"}, headers=admin)
    assert made.status_code == 201 and made.json()["username"] == "dr.kim" and "password" not in made.text
    again = client.post("/api/v1/users", json={"username": "dr.kim", "password": "a long enough one",
                                               "role": "admin"}, headers=admin)
    assert again.status_code == 409
    assert client.post(LOGIN_PATH, json={"username": "dr.kim", "password": "a long enough one"}).status_code == 200

    beyond = client.post("/api/v1/tokens", json={"username": "dr.kim", "scopes": ["audit"]}, headers=admin)
    assert beyond.status_code == 422 and "cannot use" in beyond.json()["detail"]
    created = client.post("/api/v1/tokens", json={"username": "dr.kim", "scopes": ["read:events"],
                                                  "expires_days": 7, "name": "ward tablet"}, headers=admin)
    assert created.status_code == 201, created.text
    secret, token_id = created.json()["token"], created.json()["id"]
    kim = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/events", headers=kim).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin)
    assert secret not in listed.text and any(t["id"] == token_id for t in listed.json()["data"])
    revoked = client.delete(f"/api/v1/tokens/{token_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/api/v1/events", headers=kim).status_code == 401

    disabled = client.post("/api/v1/users/dr.kim/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    assert client.post(LOGIN_PATH, json={"username": "dr.kim", "password": "a long enough one"}).status_code == 401
    users = client.get("/api/v1/users", headers=admin).json()
    assert {u["username"] for u in users["data"]} >= {"dr.kim", "test-admin"} and "hash" not in str(users)


def _audit(app, **filters) -> list[dict]:  # type: ignore[no-untyped-def]
    answer = TestClient(app).get("/api/v1/audit", params={"limit": 1000, **filters},
                                 headers={"Authorization": f"Bearer {token_for(app, 'auditor')}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_an_admin_cannot_mint_a_review_token_for_a_clinician(app) -> None:  # type: ignore[no-untyped-def]
    """With a clinician's review token an admin could sign reviews as them: refused over REST, allowed from the
    operator's CLI; who made each token is stored and audited."""
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['admin'])}"}
    ensure_user(app, "clinician")
    refused = client.post("/api/v1/tokens", json={"username": "test-clinician", "scopes": ["review"]}, headers=admin)
    assert refused.status_code == 403 and "review" in refused.json()["detail"]
    mixed = client.post("/api/v1/tokens", json={"username": "test-clinician", "scopes": ["read:events", "review"]},
                        headers=admin)
    assert mixed.status_code == 403
    reading = client.post("/api/v1/tokens", json={"username": "test-clinician", "scopes": ["read:events"]},
                          headers=admin)
    assert reading.status_code == 201
    with session_scope(app.state.session_factory) as session:
        row = session.get(ApiToken, reading.json()["id"])
        admin_id = session.scalars(select(User.id).where(User.username == "test-admin")).one()
        assert row is not None and row.created_by_user_id == admin_id
        by_cli, _secret = create_token(session=session, username="test-clinician", scopes=["review"],
                                       expires_days=1)  # the CLI's way (no created_by): allowed
        assert by_cli.created_by_user_id is None
    (entry,) = [e for e in _audit(app, action="post_token") if e["outcome"] == "allowed"]
    assert entry["object_type"] == "api_token" and entry["object_id"] == str(reading.json()["id"])
    assert "username=test-clinician" in entry["detail"] and entry["status_code"] == 201
    assert [e["status_code"] for e in _audit(app, action="post_token", outcome="refused")] == [403, 403]
    made = client.post("/api/v1/users", json={"username": "dr.ng", "password": "a long enough one",
                                              "role": "auditor"}, headers=admin)
    (user_entry,) = _audit(app, action="post_user")
    assert user_entry["object_id"] == str(made.json()["id"]) and "username=dr.ng" in user_entry["detail"]


def test_the_last_active_admin_cannot_be_disabled(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {token_for(app, 'admin', scopes=['admin'])}"}
    assert client.post("/api/v1/users/test-admin/disable", headers=admin).status_code == 409
    ensure_user(app, "admin", username="second-admin")
    assert client.post("/api/v1/users/second-admin/disable", headers=admin).status_code == 200
    assert client.post("/api/v1/users/test-admin/disable", headers=admin).status_code == 409
    assert client.get("/api/v1/users", headers=admin).status_code == 200  # still someone to manage users
