"""A thread in each API process that runs ``purge_expired`` and the retention of stopped streams' archives
(``server.archive_retention.prune_stopped_archives``) at start-up and then every ``WARDWATCH_PURGE_INTERVAL_MINUTES``.

Why a timer thread rather than a purge on every N-th sign-in: a purge then neither depends on traffic nor adds
its work to a sign-in (already the slowest request, by design), and the start-up pass clears whatever piled up
while the server was down. Several API processes purging at once is harmless: each DELETE removes only rows no
process can use, and a row deleted by one is simply not there for the others.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from server.archive_retention import prune_stopped_archives
from server.background import BackgroundThread
from server.db.session import session_scope
from server.services.housekeeping import Purged, purge_expired
from server.settings import Settings

log = logging.getLogger(__name__)


class Housekeeper(BackgroundThread):
    """Purges once when started, then every ``settings.purge_interval_minutes`` (0: only at start-up)."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        self.settings, self.factory = settings, factory
        super().__init__("wardwatch-housekeeper")

    def purge_once(self) -> Purged:
        with session_scope(self.factory) as session:
            purged = purge_expired(session=session, settings=self.settings)
        if purged.sessions or purged.login_attempts:
            log.info("purged %s", purged)
        try:  # streams no reader holds: their archives age out too (a live reader prunes its own)
            removed = prune_stopped_archives(self.settings, self.factory)
            if removed:
                log.info("stream archive retention removed %d segment(s)", removed)
        except Exception:  # noqa: BLE001 - the archives are tried again at the next pass
            log.exception("stream archive retention failed")
        return purged

    def _run(self) -> None:
        interval = self.settings.purge_interval_minutes * 60
        while not self._stop.is_set():
            try:
                self.purge_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the housekeeper
                log.exception("purging ended sessions and old sign-in tries failed")
            if not interval:
                return
            self._stop.wait(interval)
