"""Signed webhooks against a real HTTP receiver on loopback (http.server in a thread), on SQLite and PostgreSQL.

The receiver checks every request with the receiver example of docs/webhooks.md, executed from the file itself,
so the documented check and the server's signature cannot drift apart.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.session import make_engine, make_session_factory, session_scope
from server.db.webhook_tables import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from server.main import create_app
from server.schemas import ReviewIn
from server.security.secret_box import new_key
from server.services.events import review_event
from server.services.webhook_signing import signature
from server.services.webhook_targets import UnsafeTarget, check_target
from server.settings import Settings
from tests.accounts import bearer, principal_for
from tests.conftest import REDIS_URL, free_port
from tests.server.access import seed
from tests.server.conftest import upload, wait_for_tasks
from tests.server.webhooks_support import FAST, Receiver, documented_verify
from tests.server.webhooks_support import delivery_log as _log
from tests.server.webhooks_support import review as _review
from tests.server.webhooks_support import settings_for as _settings
from tests.server.webhooks_support import subscribe as _subscribe
from tests.server.webhooks_support import wait_status as _wait_status


def test_a_review_is_delivered_signed_and_the_secret_never_shows(db_url: str, tmp_path: Path, receiver: Receiver,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    verify = documented_verify()
    app = create_app(_settings(db_url, tmp_path))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        reviewed = _subscribe(client, admin, receiver.url, ["event.reviewed"])
        created_only = _subscribe(client, admin, receiver.url + "?token=receiver-side", ["event.created"])
        secret = reviewed["secret"]
        assert secret.startswith("whsec_") and len(secret) > 40 and secret != created_only["secret"]

        event = _review(client, rows.event_id)
        (got,) = receiver.wait_for(1)
        payload = verify(secret, got.body, got.headers)
        assert payload["type"] == "event.reviewed" and got.headers["X-Wardwatch-Event"] == "event.reviewed"
        assert payload["id"] == got.headers["X-Wardwatch-Delivery"]
        assert str(payload["timestamp"]) == got.headers["X-Wardwatch-Timestamp"]
        assert abs(payload["timestamp"] - got.at) < 5
        assert got.headers["Content-Type"] == "application/json"
        # data is the event as the API shows it, after the review
        shown = client.get(f"/api/v1/events/{rows.event_id}", headers=bearer(app, "clinician")).json()
        assert payload["data"] == shown == event
        assert payload["data"]["status"] == "confirmed" and payload["data"]["reviewer"] == "test-clinician"

        # what the documented check refuses: a changed body, another secret, a stale timestamp
        with pytest.raises(ValueError, match="bad signature"):
            verify(secret, got.body.replace(b"confirmed", b"rejected"), got.headers)
        with pytest.raises(ValueError, match="bad signature"):
            verify(created_only["secret"], got.body, got.headers)
        stale = got.body.replace(f'"timestamp":{payload["timestamp"]}'.encode(),
                                 f'"timestamp":{payload["timestamp"] - 3600}'.encode())
        assert stale != got.body
        with pytest.raises(ValueError, match="stale timestamp"):
            verify(secret, stale, {"X-Wardwatch-Signature": signature(secret, stale)})

        delivery = _wait_status(client, admin, reviewed["id"], "delivered")
        assert delivery["uuid"] == payload["id"] and delivery["event_id"] == rows.event_id
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
        assert [a["status_code"] for a in delivery["attempt_log"]] == [200]
        assert _log(client, admin, created_only["id"])["count"] == 0  # not subscribed to reviews
        time.sleep(0.2)
        assert len(receiver.got) == 1

        listed = client.get("/api/v1/webhooks", headers=admin)
        assert listed.status_code == 200 and listed.json()["count"] == 3  # with the seeded one
        shown_urls = {w["id"]: w["url"] for w in listed.json()["data"]}
        assert "receiver-side" not in listed.text
        assert shown_urls[created_only["id"]].endswith("/hooks/wardwatch?token=***")
        assert all("secret" not in w for w in listed.json()["data"])
        answers = [listed.text, client.get(f"/api/v1/webhooks/{reviewed['id']}/deliveries", headers=admin).text,
                   client.get("/api/v1/audit", params={"limit": 500}, headers=admin).text]
        for subscription in (reviewed, created_only):
            for text in answers + [caplog.text]:
                assert subscription["secret"] not in text
        with session_scope(app.state.session_factory) as session:
            stored = session.get(WebhookSubscription, reviewed["id"])
            assert stored is not None and stored.secret_encrypted.startswith("fernet:")
            assert secret not in stored.secret_encrypted
            assert app.state.settings.secret_box().decrypt(stored.secret_encrypted) == secret
            attempt = session.scalars(select(WebhookAttempt)).one()
            assert attempt.body.encode("ascii") == got.body  # the exact bytes sent are kept

        trail = client.get("/api/v1/audit", params={"object_type": "webhook_subscription"}, headers=admin).json()
        assert {"post_webhook", "read_deliveries", "read_webhooks"} <= {e["action"] for e in trail["data"]}

        # deactivated: a later review queues nothing for it
        gone = client.delete(f"/api/v1/webhooks/{reviewed['id']}", headers=admin)
        assert gone.status_code == 200 and gone.json()["active"] is False
        _review(client, rows.event_id, "rejected")
        assert _log(client, admin, reviewed["id"])["count"] == 1
        assert client.delete(f"/api/v1/webhooks/{reviewed['id']}", headers=admin).status_code == 200  # idempotent
    assert len(receiver.got) == 1


def test_ingesting_a_video_sends_event_created(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    from ingest.synthetic import SynthConfig, generate

    video = generate(tmp_path / "video", SynthConfig(seconds=12, seed=3, events_per_minute=10,
                                                     distractors_per_minute=0, width=160, height=120))
    verify = documented_verify()
    app = create_app(_settings(db_url, tmp_path))
    with TestClient(app) as client:
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, receiver.url, ["event.created"])
        clinician = bearer(app, "clinician")
        client.headers.update(clinician)
        recording = upload(client, video.video).json()
        wait_for_tasks(client)
        events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]
        assert events, "the tiny video should give at least one event"
        got = receiver.wait_for(len(events))
        payloads = [verify(hook["secret"], item.body, item.headers) for item in got]
        assert {p["type"] for p in payloads} == {"event.created"}
        assert sorted(p["data"]["id"] for p in payloads) == sorted(e["id"] for e in events)
        by_id = {e["id"]: e for e in events}
        for payload in payloads:
            assert payload["data"] == by_id[payload["data"]["id"]]  # with media URLs and the agreement
            assert payload["data"]["agreement"] is not None and payload["data"]["recording_id"] == recording["id"]
        log = _log(client, admin, hook["id"])
        assert log["count"] == len(events)
        deadline = time.monotonic() + 30
        while any(d["status"] != "delivered" for d in log["data"]):
            assert time.monotonic() < deadline, log
            time.sleep(0.05)
            log = _log(client, admin, hook["id"])


def test_500_twice_then_200_is_three_attempts(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    verify = documented_verify()
    receiver.codes = [500, 500]
    app = create_app(_settings(db_url, tmp_path, **FAST))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, receiver.url, ["event.reviewed"])
        _review(client, rows.event_id)
        delivery = _wait_status(client, admin, hook["id"], "delivered")
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
        assert [a["number"] for a in delivery["attempt_log"]] == [1, 2, 3]
        assert [a["error"] for a in delivery["attempt_log"]] == ["HTTP 500", "HTTP 500", None]
        assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200 and delivery["last_error"] is None
        got = receiver.wait_for(3)
        payloads = [verify(hook["secret"], item.body, item.headers) for item in got]
        assert len({p["id"] for p in payloads}) == 1  # one delivery: the same id on every attempt ...
        assert [p["timestamp"] for p in payloads] == [a["timestamp"] for a in delivery["attempt_log"]]
        gaps = [later.at - earlier.at for earlier, later in zip(got, got[1:], strict=False)]
        assert gaps[0] >= 0.04 and gaps[1] >= 0.09, gaps  # ... after 0.05 s, then 0.1 s of backoff
        time.sleep(0.3)
        assert len(receiver.got) == 3


def test_a_400_is_not_retried_and_an_admin_retry_sends_it_again(db_url: str, tmp_path: Path,
                                                                  receiver: Receiver) -> None:
    verify = documented_verify()
    receiver.codes = [400]
    app = create_app(_settings(db_url, tmp_path, **FAST))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, receiver.url, ["event.reviewed"])
        _review(client, rows.event_id)
        failed = _wait_status(client, admin, hook["id"], "failed")
        assert failed["attempts"] == 1 and failed["last_status_code"] == 400 and failed["last_error"] == "HTTP 400"
        assert failed["next_attempt_at"] is None
        time.sleep(0.4)  # several backoff periods: nothing more is sent
        assert len(receiver.got) == 1

        retried = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/retry", headers=admin)
        assert retried.status_code == 202, retried.text
        assert retried.json()["retry_of_id"] == failed["id"] and retried.json()["uuid"] != failed["uuid"]
        delivered = _wait_status(client, admin, hook["id"], "delivered")
        assert delivered["id"] == retried.json()["id"]
        first, second = (verify(hook["secret"], item.body, item.headers) for item in receiver.wait_for(2))
        assert first["data"] == second["data"] and first["id"] != second["id"]
        again = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{delivered['id']}/retry", headers=admin)
        assert again.status_code == 409 and "only a failed one" in again.json()["detail"]
        other = client.post(f"/api/v1/webhooks/{hook['id'] + 1}/deliveries/{failed['id']}/retry", headers=admin)
        assert other.status_code == 404


def test_a_dead_receiver_ends_failed_after_max_attempts(db_url: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    app = create_app(_settings(db_url, tmp_path, **FAST))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, dead, ["event.reviewed"])
        _review(client, rows.event_id)
        failed = _wait_status(client, admin, hook["id"], "failed")
        assert failed["attempts"] == 3 and failed["last_status_code"] is None
        assert [a["status_code"] for a in failed["attempt_log"]] == [None, None, None]
        assert all(a["error"].startswith("ConnectError") for a in failed["attempt_log"]), failed
        assert failed["last_error"].startswith("ConnectError") and len(failed["last_error"]) <= 200
        assert _log(client, admin, hook["id"], status="pending")["count"] == 0


def test_a_delivery_pending_at_restart_is_sent_by_the_sweeper(db_url: str, tmp_path: Path,
                                                               receiver: Receiver) -> None:
    """The process died right after the review committed, before handing the delivery over."""
    verify = documented_verify()
    settings = _settings(db_url, tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, receiver.url, ["event.reviewed"])
    # a bare session factory, as a process that commits and then dies: nobody hands the delivery over
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            review_event(session=session, event_id=rows.event_id, review=ReviewIn(decision="confirmed"),
                         reviewer=principal_for(app, "clinician"))
        with session_scope(make_session_factory(engine)) as session:
            ours = select(WebhookDelivery).where(WebhookDelivery.subscription_id == hook["id"])
            pending = session.scalars(ours).one()
            assert pending.status == DeliveryStatus.pending and pending.attempts == 0
    finally:
        engine.dispose()
    time.sleep(0.2)
    assert receiver.got == []

    with TestClient(create_app(settings)) as client:  # start-up: the sweeper sends what is due
        (got,) = receiver.wait_for(1)
        payload = verify(hook["secret"], got.body, got.headers)
        assert payload["type"] == "event.reviewed" and payload["data"]["id"] == rows.event_id
        delivered = _wait_status(client, bearer(client.app, "admin"), hook["id"], "delivered")
        assert delivered["uuid"] == payload["id"] and delivered["attempts"] == 1


def test_a_failed_event_write_queues_no_delivery(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """Outbox: the delivery row is in the review's transaction, so a rollback takes it away too."""
    settings = _settings(db_url, tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        hook = _subscribe(client, bearer(app, "admin"), receiver.url, ["event.reviewed"])
        ours = select(WebhookDelivery).where(WebhookDelivery.subscription_id == hook["id"])
        with pytest.raises(RuntimeError, match="after the review"):
            with session_scope(app.state.session_factory) as session:
                review_event(session=session, event_id=rows.event_id, review=ReviewIn(decision="rejected"),
                             reviewer=principal_for(app, "clinician"))
                assert session.scalars(ours).one().status == DeliveryStatus.pending
                raise RuntimeError("the request failed after the review")
        with session_scope(app.state.session_factory) as session:
            assert session.scalars(ours).all() == []
        time.sleep(0.2)
    assert receiver.got == []


@pytest.mark.parametrize("url, reason", [
    ("ftp://his.example.org/hook", "http:// or https://"),
    ("his.example.org/hook", "http:// or https://"),
    ("https://user:secret@his.example.org/hook", "credentials"),
    ("https://his.example.org/hook#frag", "fragment"),
    ("https://his.example.org:99999/hook", "valid URL"),
    ("http:///nohost", "no host"),
])
def test_bad_urls_are_422(db_url: str, tmp_path: Path, url: str, reason: str) -> None:
    app = create_app(_settings(db_url, tmp_path))
    with TestClient(app) as client:
        answer = client.post("/api/v1/webhooks", json={"url": url, "events": ["event.created"]},
                             headers=bearer(app, "admin"))
        assert answer.status_code == 422, answer.text
        assert reason in str(answer.json()["detail"]) and "secret" not in answer.text
        for body in ({"url": "https://his.example.org/", "events": []},
                     {"url": "https://his.example.org/", "events": ["event.deleted"]}):
            assert client.post("/api/v1/webhooks", json=body, headers=bearer(app, "admin")).status_code == 422


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/x", "http://127.7.7.7/x", "http://[::1]/x", "http://0.0.0.0/",
                                 "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/x",
                                 "http://localhost:8080/x", "http://224.0.0.1/x",
                                 "http://[fe80::1]/x"])
def test_production_refuses_loopback_and_link_local(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="refused in production"):
        check_target(url, allow_local=False)
    assert check_target(url, allow_local=True) == url


def test_private_networks_are_allowed_in_production() -> None:
    for url in ("https://10.1.2.3/hook", "http://192.168.7.20:8080/x", "https://[fd00::5]/h", "https://172.16.0.9/"):
        assert check_target(url, allow_local=False) == url


def test_production_app_refuses_a_loopback_target_unless_allowed(tmp_path: Path) -> None:
    for allow, expected in ((False, 422), (True, 201)):
        settings = Settings(data_dir=tmp_path / f"data-{allow}", database_url=f"sqlite:///{tmp_path}/{allow}.db",
                            device="cpu", environment="production", secret_keys=[new_key()],
                            webhook_allow_local_targets=allow)
        app = create_app(settings)
        with TestClient(app) as client:
            answer = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["event.created"]},
                                 headers=bearer(app, "admin"))
            assert answer.status_code == expected, answer.text
            if expected == 422:
                assert "loopback" in answer.json()["detail"]


def test_clinicians_and_anonymous_callers_are_refused(db_url: str, tmp_path: Path) -> None:
    app = create_app(_settings(db_url, tmp_path))
    with TestClient(app) as client:
        body = {"url": "https://his.example.org/hook", "events": ["event.created"]}
        assert client.post("/api/v1/webhooks", json=body).status_code == 401
        assert client.get("/api/v1/webhooks").status_code == 401
        clinician = bearer(app, "clinician")
        assert client.post("/api/v1/webhooks", json=body, headers=clinician).status_code == 403
        assert client.get("/api/v1/webhooks", headers=clinician).status_code == 403
        assert client.get("/api/v1/webhooks/1/deliveries", headers=clinician).status_code == 403
        assert client.get("/api/v1/webhooks", headers=bearer(app, "auditor")).status_code == 403
        assert client.get("/api/v1/webhooks", headers=bearer(app, "admin")).json() == {"data": [], "count": 0}


@pytest.mark.postgres
@pytest.mark.redis
def test_deliveries_go_through_a_celery_worker(pg_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """Broker mode: the API process queues the delivery on the `webhooks` queue after the review commits; a
    separate `wardwatch worker --queues webhooks` process sends it, and queues the retry of a 503 itself."""
    import redis

    verify = documented_verify()
    broker = f"{REDIS_URL}/10"
    redis.Redis.from_url(broker).flushdb()
    receiver.codes = [503]
    data_dir = tmp_path / "data"
    env = {**os.environ, "WARDWATCH_DATA_DIR": str(data_dir), "WARDWATCH_DATABASE_URL": pg_url,
           "WARDWATCH_BROKER_URL": broker, "WARDWATCH_AUTO_MIGRATE": "false", "WARDWATCH_DEVICE": "cpu",
           "WARDWATCH_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2"}
    app = create_app(Settings(data_dir=data_dir, database_url=pg_url, broker_url=broker, device="cpu"))
    log_path = tmp_path / "worker.log"
    with TestClient(app) as client, log_path.open("wb") as log_file:
        assert client.get("/api/v1/health").json()["mode"] == "broker"
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = _subscribe(client, admin, receiver.url, ["event.reviewed"])
        worker = subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--queues", "webhooks"], env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _review(client, rows.event_id)
            delivered = _wait_status(client, admin, hook["id"], "delivered", timeout=120)
            assert [a["status_code"] for a in delivered["attempt_log"]] == [503, 200], log_path.read_text()[-3000:]
            first, second = (verify(hook["secret"], r.body, r.headers) for r in receiver.wait_for(2))
            assert first["id"] == second["id"] == delivered["uuid"]
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            redis.Redis.from_url(broker).flushdb()
    text = log_path.read_text()
    # the worker process ran both attempts (the first from the API's message, the retry from its own)
    assert len(re.findall(r"wardwatch\.deliver_webhook\[[0-9a-f-]+\] succeeded", text)) >= 2, text[-3000:]
    assert hook["secret"] not in text
