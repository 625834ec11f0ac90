"""API token look-ups kept in memory, keyed by the token's digest, and dropped the moment a credential changes.

Why: resolving a bearer token (the token row, its user, the checks) on every request was 13% of a queue
request's CPU time (issue 12). A hospital system sends the same token on thousands of requests.

Why it stays safe: each request first reads one number, ``auth_epoch.value``, which database triggers raise in
the same transaction as any revocation, deletion, expiry, scope or owner change of a token, and any disabling,
deletion, role, name or demo-flag change of a user (migration 0014). A cached look-up is used only while that
number is the one it was made under, so a revoked token is refused **on the next request**, in every API
process, whether it was revoked over REST, with the CLI or by hand in SQL. Expiry is checked against the clock
on every use. ``ttl_seconds`` (60 s) bounds how long anything the triggers do not watch could be stale.
Failed look-ups are never cached (a wrong token costs a database look-up each time, as before).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db.access_tables import ApiToken, AuthEpoch
from server.db.base import utcnow
from server.security.credentials import digest
from server.security.permissions import Scope
from server.security.principal import Principal
from server.services.api_tokens import LAST_USED_EVERY, resolve_token

EPOCH_ID = 1


@dataclass
class _Entry:
    principal: Principal
    expires_at: datetime | None
    epoch: int
    cached_at: float            # time.monotonic()
    last_used_at: datetime | None


def current_epoch(*, session: Session) -> int | None:
    """The credentials' epoch (None if its row is missing: then nothing is served from the cache)."""
    table = AuthEpoch.__table__.c  # a plain statement: read on every request
    return session.scalar(select(table.value).where(table.id == EPOCH_ID))


def principal_of(token: ApiToken) -> Principal:
    scopes = frozenset(Scope(s) for s in token.scopes if s in Scope._value2member_map_)
    return Principal(user_id=token.user.id, username=token.user.username, role=token.user.role,
                     token_id=token.id, scopes=scopes)


class TokenCache:
    """One per API process (``app.state.token_cache``); thread-safe."""

    def __init__(self, *, ttl_seconds: float = 60.0, max_entries: int = 1024) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, *, session: Session, secret: str, production: bool, now: datetime | None = None
                ) -> Principal | None:
        """Who ``secret`` acts for, or None (unknown, revoked, expired, or its user may not act)."""
        now = now or utcnow()
        key = digest(secret)
        epoch = current_epoch(session=session)  # read before the look-up: an entry is tagged with what it saw
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and self._usable(entry, epoch, now):
            self._touch(session, entry, now)
            return entry.principal
        token = resolve_token(session=session, secret=secret, production=production, now=now)
        if token is None:
            with self._lock:
                self._entries.pop(key, None)
            return None
        principal = principal_of(token)
        if epoch is not None:
            self._store(key, _Entry(principal, token.expires_at, epoch, time.monotonic(), token.last_used_at))
        return principal

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _usable(self, entry: _Entry, epoch: int | None, now: datetime) -> bool:
        return (epoch is not None and entry.epoch == epoch
                and time.monotonic() - entry.cached_at < self.ttl_seconds
                and (entry.expires_at is None or entry.expires_at > now))

    def _store(self, key: str, entry: _Entry) -> None:
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest stored
            self._entries[key] = entry

    @staticmethod
    def _touch(session: Session, entry: _Entry, now: datetime) -> None:
        """``last_used_at`` as ``resolve_token`` keeps it: coarse, one write a minute per token."""
        if entry.last_used_at is None or now - entry.last_used_at > LAST_USED_EVERY:
            entry.last_used_at = now  # first, so the requests right behind this one do not write it too
            session.execute(update(ApiToken.__table__).where(ApiToken.__table__.c.id == entry.principal.token_id)
                            .values(last_used_at=now))

