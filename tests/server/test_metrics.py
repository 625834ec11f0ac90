"""GET /metrics: who may scrape it, what it counts (HTTP latency by route template, reviews, the pool, scored
clips, inference batches, jobs) and what it never shows (patient references, record IDs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from server.db.session import session_scope
from server.db.tables import Event, Recording, RecordingStatus
from server.main import create_app
from server.services.models import get_active_model
from server.settings import Settings
from tests.accounts import bearer
from tests.server.conftest import upload, wait_for_tasks

pytestmark = pytest.mark.postgres
METRICS_TOKEN = "metrics-scrape-token-for-tests"
PATIENT = "enc-PATIENT-4711"


def _app(pg_url: str, tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    return create_app(Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=None, device="cpu",
                               metrics_token=METRICS_TOKEN, **extra))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def scraped(pg_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(_app(pg_url, tmp_path), client=("10.1.2.3", 40000)) as client:
        yield client


def _event(app: object) -> int:
    with session_scope(app.state.session_factory) as session:  # type: ignore[attr-defined]
        version = get_active_model(session=session)
        assert version is not None
        recording_id = session.scalar(insert(Recording).returning(Recording.id), [
            {"source": "bed4.mp4", "status": RecordingStatus.scored, "patient_ref": PATIENT, "room": "ward-7"}])
        return int(session.scalar(insert(Event).returning(Event.id), [
            {"recording_id": recording_id, "label": version.class_names[0], "start": 1.0, "end": 4.0,
             "peak_score": 0.9, "peak_time": 2.0, "model_version_id": version.id}]))


def test_scrape_needs_the_metrics_token(scraped: TestClient) -> None:
    assert scraped.get("/metrics").status_code == 404
    assert scraped.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    # an API token is not a metrics token
    assert scraped.get("/metrics", headers=bearer(scraped.app, "admin")).status_code == 404
    answer = scraped.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")


def test_loopback_scrape_only_when_allowed_and_not_forwarded(pg_url: str, tmp_path: Path) -> None:
    with TestClient(_app(pg_url, tmp_path, metrics_loopback=True), client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 200
        # a reverse proxy on this host forwarding an outside caller is not a local scraper
        assert local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404
        assert local.get("/metrics", headers={"Forwarded": "for=203.0.113.9"}).status_code == 404
    with TestClient(_app(pg_url, tmp_path), client=("127.0.0.1", 40000)) as default:
        assert default.get("/metrics").status_code == 404  # loopback is opt-in


def test_route_templates_reviews_and_pool_without_patient_data(scraped: TestClient) -> None:
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    event_id = _event(scraped.app)
    before = scraped.get("/metrics", headers=token).text
    clinician = bearer(scraped.app, "clinician")
    assert scraped.get(f"/api/v1/events/{event_id}", headers=clinician).status_code == 200
    assert scraped.get("/api/v1/events/999999", headers=clinician).status_code == 404
    review = scraped.post(f"/api/v1/events/{event_id}/review", headers=clinician,
                          json={"decision": "confirmed", "note": f"patient {PATIENT} seen"})
    assert review.status_code == 200
    after = scraped.get("/metrics", headers=token).text

    route = "/api/v1/events/{event_id}"
    count = "wardwatch_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route=route, status="200") == \
        value(before, count, method="GET", route=route, status="200") + 1
    assert value(after, count, method="GET", route=route, status="404") >= 1
    assert value(after, "wardwatch_reviews_total", decision="confirmed") == \
        value(before, "wardwatch_reviews_total", decision="confirmed") + 1
    assert value(after, "wardwatch_db_pool_checked_out") == 0
    assert value(after, "wardwatch_db_pool_size") == scraped.app.state.settings.pool_size
    assert PATIENT not in after and "ward-7" not in after
    assert f"/events/{event_id}" not in after and "/events/999999" not in after


def test_scoring_counts_clips_frames_batches_and_the_job(pg_url: str, tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with TestClient(_app(pg_url, tmp_path, score_batch_size=4)) as client:
        client.headers.update(bearer(client.app, "clinician"))
        before = client.get("/metrics", headers=token).text
        recording = upload(client, ward_video.video)
        assert recording.status_code in (201, 202), recording.text
        wait_for_tasks(client)
        scored = client.get(f"/api/v1/recordings/{recording.json()['id']}").json()
        after = client.get("/metrics", headers=token).text
    assert scored["status"] == "scored"
    clips = value(after, "wardwatch_clips_scored_total") - value(before, "wardwatch_clips_scored_total")
    assert clips == scored["clip_count"] > 0
    frames = value(after, "wardwatch_ingest_frames_total") - value(before, "wardwatch_ingest_frames_total")
    assert frames >= clips  # every clip is made of frames
    batches = value(after, "wardwatch_inference_batch_size_count") - \
        value(before, "wardwatch_inference_batch_size_count")
    # the worker's batcher fills a batch up to 4 clips or what arrived within its wait (server/worker/batcher.py)
    assert value(after, "wardwatch_inference_batch_size_sum") - value(before, "wardwatch_inference_batch_size_sum") \
        == clips  # every clip in exactly one forward batch
    assert batches >= -(-clips // 4)  # ceil: never more than 4 in one
    assert value(after, "wardwatch_batch_recordings_count") - value(before, "wardwatch_batch_recordings_count") \
        == batches
    assert value(after, "wardwatch_inference_seconds_count") - value(before, "wardwatch_inference_seconds_count") \
        == batches
    jobs = "wardwatch_job_duration_seconds_count"
    assert value(after, jobs, kind="score", outcome="succeeded") == \
        value(before, jobs, kind="score", outcome="succeeded") + 1
