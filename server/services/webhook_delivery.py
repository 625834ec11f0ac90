"""Sending a delivery: claim it, POST it once, record what came back, say when to try again.

Three short transactions, none held open across the network: the claim (attempt counted, the body written,
the export of the event audited, ``next_attempt_at`` pushed forward by a lease so a second sender finds nothing
due), the POST, the outcome. A claim only succeeds on the attempt count it read, so two senders (a retry timer
and the sweeper, two API processes' sweepers, a redelivered Celery message) never send the same attempt twice;
a sender that dies mid-way leaves an attempt without an outcome, and the lease running out makes the delivery
due again. The POST ends by an overall deadline (``attempt_deadline_seconds``, whatever the receiver does,
``server.services.webhook_transport``), and the lease is comfortably longer, so a slow receiver can no longer
make a second sender send the same attempt while the first is still waiting.

Outcomes: 2xx delivered. 408, 429, 5xx, timeouts and connection errors are retried after
``base * factor**(n-1)`` seconds (capped) until ``webhook_max_attempts``; any other answer (3xx: redirects are
not followed; 4xx) fails at once, since sending the same bytes again cannot change it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpcore
import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.db.access_tables import AuditLog
from server.db.access_tables import Outcome as AuditOutcome
from server.db.base import utcnow
from server.db.session import session_scope
from server.db.webhook_tables import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSubscription
from server.log_levels import quiet_secret_loggers
from server.schemas import redact_url_secrets
from server.security.secret_box import SecretUnreadable
from server.services import webhook_signing as signing
from server.services import webhook_transport
from server.services.audit import AuditTarget, RequestInfo, audit_entry, record
from server.services.webhook_targets import UnresolvedTarget, UnsafeTarget, allowed_addresses
from server.settings import Settings

log = logging.getLogger(__name__)
quiet_secret_loggers()  # httpx logs request URLs (a receiver's ?token=) at INFO: server.log_levels
#: a timer may fire a little before the stored due time (two clocks); this much early still counts as due
EARLY = timedelta(milliseconds=100)
RETRYABLE_CODES = frozenset({408, 429})
ERROR_LENGTH = 200
#: the audit trail's username for the attempts: each is an export of the event to the subscriber's URL
WEBHOOK_ACTOR = "system:webhooks"


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


def attempt_deadline_seconds(settings: Settings) -> float:
    """The longest one attempt takes, from connecting to the answer's headers, whatever the receiver does
    (``server.services.webhook_transport``): twice the per-operation timeout."""
    return 2 * settings.webhook_timeout_seconds


def lease_seconds(settings: Settings) -> float:
    """How long a claim keeps a delivery from other senders: comfortably longer than an attempt's deadline
    (twice, plus a minute for the name look-up, which no socket timeout bounds, and a busy machine)."""
    return 2 * attempt_deadline_seconds(settings) + 60


def attempt_delivery(factory: sessionmaker[Session], settings: Settings, delivery_id: int) -> float | None:
    """Make one attempt at ``delivery_id`` if it is due; returns the seconds until the next attempt is due, or
    None when nothing more is to be done here (delivered, failed, not due, or another sender has it)."""
    claim = _claim(factory, settings, delivery_id)
    if claim is None:
        return None
    outcome = _post(claim, settings)
    return _record(factory, settings, claim, outcome)


def take_due_for_hand_over(*, session: Session, now: datetime, overdue_seconds: float, lease: float,
                           limit: int = 500) -> list[int]:
    """Pending deliveries due for at least ``overdue_seconds`` (an in-flight one is not: its lease lies ahead)
    that no sweeper has handed over within the last ``lease`` seconds, oldest due first; they are marked handed
    over at ``now`` in the caller's transaction. So a delivery stuck in a queue (workers busy, a broker
    backlog) is queued again once per lease, not on every sweep; two sweepers never both take one (the mark
    is a conditional update, and only the rows it changed are returned)."""
    not_recent = or_(WebhookDelivery.handed_over_at.is_(None),
                     WebhookDelivery.handed_over_at <= now - timedelta(seconds=lease))
    query = (select(WebhookDelivery.id)
             .where(WebhookDelivery.status == DeliveryStatus.pending,
                    WebhookDelivery.next_attempt_at <= now - timedelta(seconds=overdue_seconds), not_recent)
             .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    due = list(session.scalars(query))
    if not due:
        return []
    taken = set(session.scalars(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(due), not_recent).values(handed_over_at=now)
        .returning(WebhookDelivery.id).execution_options(synchronize_session=False)))
    return [delivery_id for delivery_id in due if delivery_id in taken]


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
        if secret is not None:  # the event leaves with this attempt: audited with it, before any byte is sent
            record(session=session, entry=_export_entry(delivery, subscription, number))
        headers = None if secret is None else signing.headers(
            secret=secret, raw_body=raw, delivery_uuid=delivery.uuid, event_type=delivery.event_type.value,
            timestamp=timestamp)
        return Claim(delivery_id, attempt.id, number, delivery.uuid, subscription.url, raw, headers)


def _export_entry(delivery: WebhookDelivery, subscription: WebhookSubscription, number: int) -> AuditLog:
    """An attempt sends the event's data (the review note included) to the subscriber: an ``export`` of that
    event by the webhook sender, as FHIR exports are audited, naming the delivery and the redacted URL."""
    detail = (f"{delivery.event_type.value} delivery={delivery.uuid} attempt={number} webhook={subscription.id} "
              f"url={redact_url_secrets(subscription.url)}")
    return audit_entry(principal=None, target=AuditTarget("export", "event", str(delivery.event_id)),
                       info=RequestInfo(request_id=None, client_address=None), outcome=AuditOutcome.allowed,
                       username=WEBHOOK_ACTOR, detail=detail)


def _post(claim: Claim, settings: Settings) -> Outcome:
    """One POST, over by the attempt's deadline, to addresses checked at the connection; never raises."""
    started = time.monotonic()
    deadline = attempt_deadline_seconds(settings)

    def done(status_code: int | None, error: str | None, *, retryable: bool) -> Outcome:
        return Outcome(status_code, _short(error, claim.url), int((time.monotonic() - started) * 1000), retryable)

    if claim.headers is None:  # retried: putting the old key back in WARDWATCH_SECRET_KEYS lets it through
        return done(None, "the signing secret cannot be decrypted with the configured keys", retryable=True)
    allow_local = settings.webhook_allow_local_targets or not settings.production
    try:
        code = webhook_transport.post(
            claim.url, body=claim.body, headers=claim.headers, timeout=settings.webhook_timeout_seconds,
            deadline_seconds=deadline, addresses=lambda host: allowed_addresses(host, allow_local=allow_local))
    except UnresolvedTarget as exc:  # DNS may come back
        return done(None, str(exc), retryable=True)
    except UnsafeTarget as exc:  # an address that became forbidden: nothing was connected to
        return done(None, str(exc), retryable=False)
    except httpcore.TimeoutException as exc:
        if time.monotonic() - started >= deadline * 0.99:
            return done(None, f"timeout: the attempt's {deadline:g} s deadline passed ({type(exc).__name__})",
                        retryable=True)
        return done(None, f"timeout ({type(exc).__name__})", retryable=True)
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:  # refused or reset, protocol errors
        return done(None, f"{type(exc).__name__}: {exc}", retryable=True)
    except (httpcore.UnsupportedProtocol, httpx.InvalidURL) as exc:
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
