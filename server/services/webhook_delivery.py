"""Sending a delivery: claim it, POST it once, record what came back, say when to try again.

Three short transactions, none held open across the network: the claim (attempt counted, the body written,
``next_attempt_at`` pushed forward by a lease so a second sender finds nothing due), the POST, the outcome.
A claim only succeeds on the attempt count it read, so two senders (a retry timer and the sweeper, two API
processes' sweepers, a redelivered Celery message) never send the same attempt twice; a sender that dies
mid-way leaves an attempt without an outcome, and the lease running out makes the delivery due again.

Outcomes: 2xx delivered. 408, 429, 5xx, timeouts and connection errors are retried after
``base * factor**(n-1)`` seconds (capped) until ``webhook_max_attempts``; any other answer (3xx: redirects are
not followed; 4xx) fails at once, since sending the same bytes again cannot change it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.session import session_scope
from server.db.webhook_tables import DeliveryStatus, WebhookAttempt, WebhookDelivery
from server.schemas import redact_url_secrets
from server.security.secret_box import SecretUnreadable
from server.services import webhook_signing as signing
from server.services.webhook_targets import UnsafeTarget, check_target
from server.settings import Settings

log = logging.getLogger(__name__)
#: a timer may fire a little before the stored due time (two clocks); this much early still counts as due
EARLY = timedelta(milliseconds=100)
RETRYABLE_CODES = frozenset({408, 429})
ERROR_LENGTH = 200


@dataclass(frozen=True)
class Claim:
    """An attempt this sender owns: everything needed to POST it without the database."""

    delivery_id: int
    attempt_id: int
    number: int
    uuid: str
    url: str
    body: bytes
    headers: dict[str, str] | None  # None: the secret could not be decrypted (keys changed, e.g. a restore)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    retryable: bool

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt."""
    delay = settings.webhook_backoff_base_seconds * settings.webhook_backoff_factor ** (attempts - 1)
    return min(delay, settings.webhook_backoff_max_seconds)


def lease_seconds(settings: Settings) -> float:
    """Longer than one attempt can take (connect, write, read, pool timeouts) with a margin."""
    return 4 * settings.webhook_timeout_seconds + 60


def attempt_delivery(factory: sessionmaker[Session], settings: Settings, delivery_id: int) -> float | None:
    """Make one attempt at ``delivery_id`` if it is due; returns the seconds until the next attempt is due, or
    None when nothing more is to be done here (delivered, failed, not due, or another sender has it)."""
    claim = _claim(factory, settings, delivery_id)
    if claim is None:
        return None
    outcome = _post(claim, settings)
    return _record(factory, settings, claim, outcome)


def due_deliveries(*, session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Pending deliveries due at ``now`` (an in-flight one is not: its lease lies ahead), oldest due first."""
    query = (select(WebhookDelivery.id)
             .where(WebhookDelivery.status == DeliveryStatus.pending, WebhookDelivery.next_attempt_at <= now)
             .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    return list(session.scalars(query))


def _claim(factory: sessionmaker[Session], settings: Settings, delivery_id: int) -> Claim | None:
    with session_scope(factory) as session:
        now = utcnow()
        delivery = session.get(WebhookDelivery, delivery_id)
        if (delivery is None or delivery.status != DeliveryStatus.pending or delivery.next_attempt_at is None
                or delivery.next_attempt_at > now + EARLY):
            return None
        subscription = delivery.subscription
        if not subscription.active:
            _finish(delivery, DeliveryStatus.failed, error="the subscription was deactivated")
            return None
        number = delivery.attempts + 1
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == delivery.attempts,
                   WebhookDelivery.status == DeliveryStatus.pending)
            .values(attempts=number, next_attempt_at=now + timedelta(seconds=lease_seconds(settings)))
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None  # another sender claimed it between our read and our update
        timestamp = int(now.timestamp())
        raw = signing.body(delivery_uuid=delivery.uuid, event_type=delivery.event_type.value,
                           created_at=delivery.created_at, timestamp=timestamp, data=delivery.data)
        try:
            secret = settings.secret_box().decrypt(subscription.secret_encrypted)
        except SecretUnreadable:
            secret = None
        attempt = WebhookAttempt(delivery_id=delivery_id, number=number, started_at=now, timestamp=timestamp,
                                 body=raw.decode("ascii"))
        session.add(attempt)
        session.flush()
        headers = None if secret is None else signing.headers(
            secret=secret, raw_body=raw, delivery_uuid=delivery.uuid, event_type=delivery.event_type.value,
            timestamp=timestamp)
        return Claim(delivery_id, attempt.id, number, delivery.uuid, subscription.url, raw, headers)


def _post(claim: Claim, settings: Settings) -> Outcome:
    """One POST; never raises. The response body is not read (a receiver cannot make us download much)."""
    started = time.monotonic()

    def done(status_code: int | None, error: str | None, *, retryable: bool) -> Outcome:
        return Outcome(status_code, _short(error, claim.url), int((time.monotonic() - started) * 1000), retryable)

    if claim.headers is None:  # retried: putting the old key back in WARDWATCH_SECRET_KEYS lets it through
        return done(None, "the signing secret cannot be decrypted with the configured keys", retryable=True)
    try:
        check_target(claim.url, allow_local=settings.webhook_allow_local_targets or not settings.production)
    except UnsafeTarget as exc:
        return done(None, f"refused: {exc}", retryable=False)
    try:
        with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", claim.url, content=claim.body, headers=claim.headers) as response:
                code = response.status_code
    except httpx.TimeoutException as exc:
        return done(None, f"timeout ({type(exc).__name__})", retryable=True)
    except httpx.TransportError as exc:  # connection refused or reset, DNS, protocol errors
        return done(None, f"{type(exc).__name__}: {exc}", retryable=True)
    except httpx.InvalidURL as exc:
        return done(None, f"refused: {exc}", retryable=False)
    if 200 <= code < 300:
        return done(code, None, retryable=False)
    if 300 <= code < 400:
        return done(code, f"redirect {code} not followed: point the subscription at the final URL", retryable=False)
    return done(code, f"HTTP {code}", retryable=code in RETRYABLE_CODES or code >= 500)


def _short(error: str | None, url: str) -> str | None:
    """At most ERROR_LENGTH characters, with the URL's query (a receiver's token?) redacted if it is echoed."""
    if error is None:
        return None
    return error.replace(url, redact_url_secrets(url))[:ERROR_LENGTH]


def _record(factory: sessionmaker[Session], settings: Settings, claim: Claim, outcome: Outcome) -> float | None:
    with session_scope(factory) as session:
        attempt = session.get(WebhookAttempt, claim.attempt_id)
        if attempt is not None:
            attempt.status_code, attempt.error, attempt.duration_ms = (outcome.status_code, outcome.error,
                                                                       outcome.duration_ms)
        delivery = session.get(WebhookDelivery, claim.delivery_id)
        if delivery is None or delivery.attempts != claim.number or delivery.status != DeliveryStatus.pending:
            return None  # our lease ran out and another sender took over: its outcome is the one that counts
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        log.info("webhook delivery %s attempt %d: %s", claim.uuid, claim.number,
                 outcome.status_code if outcome.status_code is not None else outcome.error)
        if outcome.delivered:
            _finish(delivery, DeliveryStatus.delivered)
            return None
        if outcome.retryable and claim.number < settings.webhook_max_attempts:
            delay = backoff_seconds(settings, claim.number)
            delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
            return delay
        _finish(delivery, DeliveryStatus.failed, error=outcome.error)
        log.warning("webhook delivery %s failed after %d attempt(s): %s", claim.uuid, claim.number, outcome.error)
        return None


def _finish(delivery: WebhookDelivery, status: DeliveryStatus, *, error: str | None = None) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    if status == DeliveryStatus.delivered:
        delivery.delivered_at = utcnow()
    elif error is not None:
        delivery.last_error = error[:ERROR_LENGTH]
