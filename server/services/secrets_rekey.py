"""Re-encrypting every encrypted column with the first key of WARDWATCH_SECRET_KEYS: the second half of a key
rotation (new key first, old ones kept, then this, then the old keys removed).

Why one list: the rotation removes the old key once this has run, so a column it forgets becomes unreadable
then (``streams rekey`` once re-encrypted the stream URLs only, and every webhook secret was lost with the old
key). A table that stores a ``settings.secret_box()`` value adds its re-encrypter to ``REKEYERS``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from server.security.secret_box import SecretBox
from server.services.streams import reencrypt_stream_urls
from server.services.webhook_subscriptions import reencrypt_webhook_secrets

#: (what it is, in messages; the function that re-encrypts it and returns how many values it rewrote)
REKEYERS: tuple[tuple[str, Callable[..., int]], ...] = (
    ("stream URL", reencrypt_stream_urls),           # job.params.url of stream jobs
    ("webhook secret", reencrypt_webhook_secrets),   # webhook_subscription.secret_encrypted
)


def reencrypt_all(*, session: Session, box: SecretBox) -> dict[str, int]:
    """Every encrypted value re-encrypted with ``box``'s first key, in the caller's transaction; returns how
    many of each kind were rewritten. Raises ``SecretUnreadable`` if any value opens with none of the keys (the
    caller's transaction then rolls back: all or nothing)."""
    return {kind: rekey(session=session, box=box) for kind, rekey in REKEYERS}
