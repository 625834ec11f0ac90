"""The security review's findings on webhooks, each against real parts (a receiver on loopback, the database
of ``db_url``, Redis): subscribing needs read access to events, every attempt is audited as an export, an
attempt has an overall deadline, the sweeper queues a delivery once per lease, the target policy is the stream
policy, the HTTP client does not log URLs, and delivery ids are 64-bit."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ingest.destinations import DestinationPolicy
from ingest.errors import DestinationRefused
from server.db.access_tables import AuditLog
from server.db.session import make_engine, make_session_factory, session_scope
from server.db.webhook_tables import DeliveryStatus, WebhookDelivery, WebhookSubscription
from server.main import create_app
from server.schemas import ReviewIn
from server.security.secret_box import SecretBox, new_key
from server.services.events import review_event
from server.services.streams import stream_url
from server.services.webhook_delivery import attempt_deadline_seconds, attempt_delivery, lease_seconds
from server.services.webhook_targets import UnresolvedTarget, UnsafeTarget, check_target
from server.settings import Settings
from server.webhook_sweeper import WebhookSweeper
from tests.accounts import bearer, principal_for
from tests.conftest import REDIS_URL
from tests.server.access import seed
from tests.server.webhooks_support import (
    FAST,
    Dripper,
    Receiver,
    documented_verify,
    review,
    settings_for,
    subscribe,
    wait_status,
)


def test_an_admin_token_without_read_events_cannot_subscribe_nor_retry(db_url: str, tmp_path: Path,
                                                                       receiver: Receiver) -> None:
    """Finding 1: a token with only `admin` is refused the events themselves (GET /events/1: 403), so it must not
    get them by subscribing its own URL either (/tmp/probe/p6.py), nor by retrying a delivery."""
    app = create_app(settings_for(db_url, tmp_path, **FAST))
    with TestClient(app) as client:
        rows = seed(app)
        admin_only = bearer(app, "admin", scopes=["admin"])
        events_only = bearer(app, "admin", scopes=["read:events"])
        both = bearer(app, "admin", scopes=["admin", "read:events"])
        assert client.get(f"/api/v1/events/{rows.event_id}", headers=admin_only).status_code == 403
        body = {"url": receiver.url, "events": ["event.reviewed"]}
        refused = client.post("/api/v1/webhooks", json=body, headers=admin_only)
        assert refused.status_code == 403 and "read:events" in refused.json()["detail"], refused.text
        assert client.post("/api/v1/webhooks", json=body, headers=events_only).status_code == 403
        assert client.get("/api/v1/webhooks", headers=admin_only).status_code == 200  # managing them is still admin
        receiver.codes = [400]
        hook = subscribe(client, both, receiver.url + "?token=s3cret-query", ["event.reviewed"])
        review(client, rows.event_id, note="pt J. Smith bed 4 fell")
        failed = wait_status(client, both, hook["id"], "failed")
        retry = f"/api/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/retry"
        assert client.post(retry, headers=admin_only).status_code == 403
        assert client.post(retry, headers=both).status_code == 202
        wait_status(client, both, hook["id"], "delivered")
        assert len(receiver.wait_for(2)) == 2

        with session_scope(app.state.session_factory) as session:
            trail = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
            created = [e for e in trail if e.action == "post_webhook" and e.outcome.value == "allowed"]
            (entry,) = created
            assert entry.object_id == str(hook["id"])
            assert receiver.url.removeprefix("http://") + "?token=***" in entry.detail, entry.detail
            refusals = [e for e in trail if e.action in ("post_webhook", "post_retry") and e.status_code == 403]
            assert len(refusals) == 3
            # each attempt that carried the event went out as an export of it, by the webhook sender
            exports = [e for e in trail if e.action == "export" and e.username == "system:webhooks"]
            assert len(exports) == 2, [(e.action, e.username, e.detail) for e in trail]
            for export in exports:
                assert export.object_type == "event" and export.object_id == str(rows.event_id)
                assert export.user_id is None and export.outcome.value == "allowed"
                assert f"webhook={hook['id']}" in export.detail and "?token=***" in export.detail
            assert all("s3cret-query" not in (e.detail or "") for e in trail)
        # the export entries are part of the trail's FHIR export like any other
        fhir = client.get("/api/v1/fhir/AuditEvent", params={"_count": 100}, headers=bearer(app, "auditor"))
        assert fhir.status_code == 200 and "system:webhooks" in fhir.text, fhir.text[:500]


def test_delivery_ids_are_64_bit_in_routes(db_url: str, tmp_path: Path) -> None:
    """Finding 6: webhook_delivery.id is BIGINT, so its path and cursor take 64-bit values (a 404 or a page,
    never a 422 for an id the column can hold)."""
    app = create_app(settings_for(db_url, tmp_path))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        big = 2**40 + 7
        retry = client.post(f"/api/v1/webhooks/{rows.webhook_id}/deliveries/{big}/retry", headers=admin)
        assert retry.status_code == 404, retry.text
        page = client.get(f"/api/v1/webhooks/{rows.webhook_id}/deliveries", params={"cursor": big}, headers=admin)
        assert page.status_code == 200 and [d["id"] for d in page.json()["data"]] == [rows.delivery_id]
        for too_big in (2**63, 0):
            assert client.post(f"/api/v1/webhooks/{rows.webhook_id}/deliveries/{too_big}/retry",
                               headers=admin).status_code == 422
            assert client.get(f"/api/v1/webhooks/{rows.webhook_id}/deliveries", params={"cursor": too_big},
                              headers=admin).status_code == 422


def test_a_token_in_the_receiver_url_is_in_no_log_line(db_url: str, tmp_path: Path, receiver: Receiver,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Finding 5: the HTTP client logged ``HTTP Request: POST http://...?token=...`` at INFO. Every logger of ours
    at DEBUG, the client's at whatever the server sets: the token shows nowhere. (SQL echo is left out: the URL
    is a plain column, so logged SQL parameters would show it.)"""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="server")
    token = "s3cret-receiver-token"
    app = create_app(settings_for(db_url, tmp_path))
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = subscribe(client, admin, f"{receiver.url}?token={token}", ["event.reviewed"])
        review(client, rows.event_id)
        (got,) = receiver.wait_for(1)
        assert got.path.endswith(f"?token={token}")  # the receiver did get its token
        wait_status(client, admin, hook["id"], "delivered")
    messages = [record.getMessage() for record in caplog.records]
    assert any("webhook delivery" in m for m in messages)  # our lines are captured ...
    leaks = [m for m in messages if token in m]
    assert leaks == [], leaks  # ... and none has the token
    assert token not in caplog.text


@pytest.mark.parametrize("url", ["http://[fd00:ec2::254]/x", "http://100.100.100.200/latest", "http://[64:ff9b::a9fe:a9fe]/",
                                 "http://[::127.0.0.1]/x", "http://192.0.0.8/", "http://240.0.0.1/", "http://0/x",
                                 "http://127.1/x", "http://2130706433/x", "http://[::ffff:a9fe:a9fe]/"])
def test_production_refuses_what_the_stream_policy_refuses(url: str) -> None:
    """Finding 4: cloud metadata (AWS IPv6, Alibaba), NAT64 and IPv4-compatible forms, reserved ranges and
    the spellings of 127.0.0.1 that resolve to it: the webhook policy is the stream policy's table."""
    with pytest.raises(UnsafeTarget, match="refused in production"):
        check_target(url, allow_local=False)
    with pytest.raises(DestinationRefused):
        DestinationPolicy().check(url)  # the same verdict from the stream policy itself
    assert check_target(url, allow_local=True) == url


def test_a_name_that_does_not_resolve_is_refused_at_creation(db_url: str, tmp_path: Path) -> None:
    """Finding 4: an unresolvable name used to pass (nothing to check): now 422, in development too."""
    with pytest.raises(UnresolvedTarget, match="does not resolve"):
        check_target("https://his.invalid/hook", allow_local=False)
    app = create_app(settings_for(db_url, tmp_path))
    with TestClient(app) as client:
        answer = client.post("/api/v1/webhooks", json={"url": "https://nowhere.invalid/h", "events": ["event.created"]},
                             headers=bearer(app, "admin"))
        assert answer.status_code == 422 and "does not resolve" in answer.json()["detail"], answer.text
        assert client.get("/api/v1/webhooks", headers=bearer(app, "admin")).json()["count"] == 0


def _queue_review_without_hand_over(app: object, settings: Settings, event_id: int) -> None:
    """A review committed by a process that then died: the delivery is in the outbox, nobody has it."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            review_event(session=session, event_id=event_id, review=ReviewIn(decision="confirmed"),
                         reviewer=principal_for(app, "clinician"))
    finally:
        engine.dispose()


def test_an_attempt_to_a_now_forbidden_address_fails_without_connecting(db_url: str, tmp_path: Path,
                                                                         dripper: Dripper) -> None:
    """The check is made again at every attempt, at the connection: a subscription made while loopback was
    allowed, sent by a production process, is refused without a connection and logged as refused."""
    key = new_key()
    settings = settings_for(db_url, tmp_path, secret_keys=[key])
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        hook = subscribe(client, bearer(app, "admin"), dripper.url, ["event.reviewed"])
    _queue_review_without_hand_over(app, settings, rows.event_id)
    production = settings.model_copy(update={"environment": "production"})
    with session_scope(app.state.session_factory) as session:
        (delivery,) = session.scalars(select(WebhookDelivery).where(WebhookDelivery.subscription_id == hook["id"]))
        delivery_id = delivery.id
    assert attempt_delivery(app.state.session_factory, production, delivery_id) is None
    with session_scope(app.state.session_factory) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None and delivery.status == DeliveryStatus.failed and delivery.attempts == 1
        (attempt,) = delivery.attempt_log
        assert attempt.status_code is None and "loopback" in attempt.error and "refused" in attempt.error
    assert dripper.connections == []  # not a packet


def test_a_dripping_receiver_is_cut_off_at_the_deadline(db_url: str, tmp_path: Path, dripper: Dripper) -> None:
    """Finding 3: a receiver sending a header line every 0.25 s never trips a 0.5 s read timeout (before, the
    POST stayed open the 10 s the receiver took, /tmp/probe/p5.py); the attempt now ends by its deadline
    (2 x 0.5 s) and is logged as a timeout. The claim lease stays well beyond that deadline."""
    settings = settings_for(db_url, tmp_path, webhook_timeout_seconds=0.5, webhook_max_attempts=1)
    deadline = attempt_deadline_seconds(settings)
    assert deadline == 1.0 and lease_seconds(settings) >= 10 * deadline
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        hook = subscribe(client, admin, dripper.url, ["event.reviewed"])
        review(client, rows.event_id)
        failed = wait_status(client, admin, hook["id"], "failed", timeout=20)
        (attempt,) = failed["attempt_log"]
        assert attempt["status_code"] is None and attempt["error"].startswith("timeout"), attempt
        assert "deadline" in attempt["error"]
        assert 900 <= attempt["duration_ms"] <= 1600, attempt  # the deadline, not the receiver, ended it
        assert len(dripper.connections) == 1 and dripper.finished == []


def test_slow_receivers_do_not_hold_up_the_others(db_url: str, tmp_path: Path, dripper: Dripper,
                                                  receiver: Receiver) -> None:
    """Finding 3: as many dripping subscribers as sender threads used to hold every thread for as long as they
    dripped, and no other subscriber got anything; now they hold them until the deadline at most."""
    settings = settings_for(db_url, tmp_path, webhook_timeout_seconds=0.5, webhook_max_attempts=1,
                            webhook_workers=2)
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        admin = bearer(app, "admin")
        for _ in range(2):  # subscribed first: their deliveries are queued first
            subscribe(client, admin, dripper.url, ["event.reviewed"])
        healthy = subscribe(client, admin, receiver.url, ["event.reviewed"])
        started = time.monotonic()
        review(client, rows.event_id)
        receiver.wait_for(1, timeout=8)
        assert time.monotonic() - started < 4  # one deadline (1 s) and scheduling, not the 10 s of dripping
        wait_status(client, admin, healthy["id"], "delivered")


@pytest.mark.redis
def test_the_sweeper_queues_a_due_delivery_once_per_lease(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """Finding 3: with the webhook workers stuck (here: none consume the broker), every sweep used to queue every
    due delivery again, and the broker grew by the backlog each pass. Now two sweeps in a row queue it once; only
    after a lease without an attempt is it queued again."""
    import redis

    from server.worker.dispatch import CeleryDispatcher

    broker = f"{REDIS_URL}/11"
    queue = redis.Redis.from_url(broker)
    queue.flushdb()
    settings = settings_for(db_url, tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        rows = seed(app)
        hook = subscribe(client, bearer(app, "admin"), receiver.url, ["event.reviewed"])
    _queue_review_without_hand_over(app, settings, rows.event_id)
    in_broker = settings.model_copy(update={"broker_url": broker})
    dispatcher = CeleryDispatcher(in_broker)
    sweeper = WebhookSweeper(in_broker, app.state.session_factory, dispatcher)
    try:
        assert sweeper.sweep_once() == 1
        assert sweeper.sweep_once() == 0
        assert sweeper.sweep_once(overdue_seconds=0) == 0
        assert queue.llen("webhooks") == 1
        with session_scope(app.state.session_factory) as session:
            (delivery,) = session.scalars(select(WebhookDelivery).where(WebhookDelivery.subscription_id == hook["id"]))
            assert delivery.status == DeliveryStatus.pending and delivery.attempts == 0
            assert delivery.handed_over_at is not None
            # a lease later, still nobody has attempted it: the hand-over may be lost, queue it again
            delivery.handed_over_at -= timedelta(seconds=lease_seconds(settings) + 1)
        assert sweeper.sweep_once() == 1
        assert queue.llen("webhooks") == 2
    finally:
        dispatcher.shutdown()
        queue.flushdb()
    assert receiver.got == []


@pytest.mark.parametrize("command", [["secrets", "rekey"], ["streams", "rekey"]])
def test_key_rotation_keeps_webhook_secrets_and_stream_urls(
        db_url: str, tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """Finding 2, the documented rotation end to end: values encrypted with key A; keys [B, A]; rekey; then B
    alone. Deliveries are still signed with the subscription's secret and the stream URL still opens. (`streams
    rekey`, the older name, used to re-encrypt the stream URLs only: every webhook secret was lost with A.)"""
    from server.cli import main
    from server.db.tables import Job
    from server.settings import get_settings

    old, new = new_key(), new_key()
    url = "rtsp://camuser:s3cretpw@10.0.0.5/live?token=abc123"
    first = settings_for(db_url, tmp_path, secret_keys=[old])
    app = create_app(first)
    with TestClient(app) as client:
        rows = seed(app)
        hook = subscribe(client, bearer(app, "admin"), receiver.url, ["event.reviewed"])
        with session_scope(app.state.session_factory) as session:
            job = Job(kind="stream", status="failed", params={"url": SecretBox([old]).encrypt(url)})
            session.add(job)
            session.flush()
            job_id = job.id
    monkeypatch.setenv("WARDWATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDWATCH_DATABASE_URL", db_url)
    try:
        monkeypatch.setenv("WARDWATCH_SECRET_KEYS", new)  # the old key removed too early: refused, nothing changed
        get_settings.cache_clear()
        assert main(command) == 2
        assert "keep the old key" in capsys.readouterr().err
        monkeypatch.setenv("WARDWATCH_SECRET_KEYS", f"{new},{old}")
        get_settings.cache_clear()
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "1 stream URL(s)" in out and "2 webhook secret(s)" in out, out  # with the seeded subscription
    finally:
        get_settings.cache_clear()

    verify = documented_verify()
    only_new = settings_for(db_url, tmp_path, secret_keys=[new])
    app = create_app(only_new)
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            stored = session.get(Job, job_id)
            assert stored is not None and stream_url(settings=only_new, job=stored) == url
            for subscription in session.scalars(select(WebhookSubscription)):
                SecretBox([new]).decrypt(subscription.secret_encrypted)  # every one opens with B alone
            (entry,) = session.scalars(select(AuditLog).where(AuditLog.action == "secrets.rekey"))
            assert entry.username == "system:cli" and "webhook_secrets=2" in entry.detail
        review(client, rows.event_id)
        (got,) = receiver.wait_for(1)
        payload = verify(hook["secret"], got.body, got.headers)  # signed with the secret shown at creation
        assert payload["data"]["id"] == rows.event_id
        assert wait_status(client, bearer(app, "admin"), hook["id"], "delivered")["attempts"] == 1
