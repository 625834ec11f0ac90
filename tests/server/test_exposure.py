"""What the API gives away without meaning to: the schema in production, stream credentials in job
parameters, and a 500 for a time without a zone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.db.session import session_scope
from server.db.tables import Job, JobStatus
from server.main import create_app
from server.schemas import redact_url_secrets
from server.security.secret_box import new_key
from server.settings import Settings
from tests.accounts import bearer


def _app(db_url: str, tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    return create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                               **extra))  # type: ignore[arg-type]


@pytest.mark.parametrize("environment", ["development", "production"])
def test_api_docs_only_in_development(tmp_path: Path, environment: str) -> None:
    app = _app(f"sqlite:///{tmp_path / 'w.db'}", tmp_path, environment=environment, secret_keys=[new_key()])
    with TestClient(app) as client:
        codes = {path: client.get(path).status_code for path in ("/docs", "/redoc", "/openapi.json")}
    if environment == "production":
        assert set(codes.values()) == {404}, codes
    else:
        assert set(codes.values()) == {200}, codes


def test_job_parameters_never_show_stream_credentials(db_url: str, tmp_path: Path) -> None:
    app = _app(db_url, tmp_path)
    url = "rtsp://camera:s3cr3t@10.0.0.5:554/live/ch1?token=abcdef"
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            job = Job(kind="stream", status=JobStatus.running,
                      params={"url": url, "nested": {"sources": ["https://u:p@cdn.example/x.m3u8?sig=zz"]}})
            session.add(job)
            session.flush()
            job_id = job.id
        admin = bearer(app, "admin")
        answers = [client.get(f"/api/v1/jobs/{job_id}", headers=admin), client.get("/api/v1/jobs", headers=admin)]
        for answer in answers:
            assert answer.status_code == 200
            for secret in ("s3cr3t", "abcdef", "camera:", "u:p@", "sig=zz"):
                assert secret not in answer.text
        assert answers[0].json()["params"]["url"] == "rtsp://***@10.0.0.5:554/live/ch1?token=***"
        with session_scope(app.state.session_factory) as session:
            stored = session.get(Job, job_id)
            assert stored is not None and stored.params["url"] == url  # the worker still has the real one


def test_url_redaction() -> None:
    assert redact_url_secrets("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact_url_secrets("http://[::1]:8080/a?b=c") == "http://[::1]:8080/a?b=***"
    assert redact_url_secrets("http://h/a?s3cr3t&x=1#frag") == "http://h/a?***&x=***"
    assert redact_url_secrets("rtsp://user@host/x") == "rtsp://***@host/x"
    assert redact_url_secrets("http://host:notaport/x") == "***"


def test_a_time_without_a_zone_is_422_not_500(db_url: str, tmp_path: Path) -> None:
    app = _app(db_url, tmp_path)
    with TestClient(app) as client:
        reader = bearer(app, "clinician")
        for path in ("/api/v1/events", "/api/v1/audit"):
            headers = reader if path.endswith("events") else bearer(app, "auditor")
            for name in ("since", "until"):
                answer = client.get(path, params={name: "2026-01-01T00:00:00"}, headers=headers)
                assert answer.status_code == 422, (path, name, answer.text)
                aware = client.get(path, params={name: "2026-01-01T00:00:00Z"}, headers=headers)
                assert aware.status_code == 200, (path, name, aware.text)
