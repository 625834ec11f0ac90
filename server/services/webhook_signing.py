"""What goes over the wire: the JSON body of one attempt, its headers and its signature.

``X-Wardwatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the subscription's secret. The body
carries the delivery id and this attempt's Unix ``timestamp`` (also sent as ``X-Wardwatch-Timestamp``), so both
are covered by the signature: a receiver refuses a body whose timestamp is outside its window and an id it has
already accepted, and that stops replays. The timestamp is the attempt's, not the event's, so a retry after a
long outage still passes a five-minute window; ``created_at`` says when the delivery was queued.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any

from server import __version__

SIGNATURE_HEADER = "X-Wardwatch-Signature"
TIMESTAMP_HEADER = "X-Wardwatch-Timestamp"
DELIVERY_HEADER = "X-Wardwatch-Delivery"
EVENT_HEADER = "X-Wardwatch-Event"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A signing secret: 256 random bits, prefixed so it is recognisable in a receiver's configuration."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def iso(moment: datetime) -> str:
    """UTC as ``2026-03-01T08:00:00.123456Z``, the way the API's JSON spells it."""
    return moment.isoformat().replace("+00:00", "Z")


def body(*, delivery_uuid: str, event_type: str, created_at: datetime, timestamp: int,
         data: dict[str, Any]) -> bytes:
    """The exact bytes POSTed: compact ASCII JSON (no encoding ambiguity for whoever recomputes the HMAC)."""
    payload = {"id": delivery_uuid, "type": event_type, "created_at": iso(created_at), "timestamp": timestamp,
               "data": data}
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


def signature(secret: str, raw_body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def headers(*, secret: str, raw_body: bytes, delivery_uuid: str, event_type: str, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"Wardwatch-Webhooks/{__version__}",
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_uuid,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, raw_body),
    }
