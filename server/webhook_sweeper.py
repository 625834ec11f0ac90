"""The webhook sweeper: sends deliveries that are due but that nobody is about to send.

Deliveries are normally handed to the dispatcher right after their transaction commits, and each attempt
schedules the next. That hand-over is lost if the process dies after the commit, if the broker is down, or when
a retry timer dies with its process; the sweeper is what makes "nothing is lost" true. It runs in every API
process, once at start-up (everything due) and then every ``webhook_sweep_seconds`` (what has been due for
longer than that, so it does not race the timers and countdowns of deliveries in good health). Several
sweepers are harmless: an attempt is claimed in the database before it is sent (server.services.webhook_delivery).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.session import session_scope
from server.services.webhook_delivery import due_deliveries
from server.settings import Settings
from server.worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


class WebhookSweeper:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.settings, self.factory, self.dispatcher = settings, factory, dispatcher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wardwatch-webhook-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        overdue = 0.0  # at start-up, everything that is due
        while not self._stop.is_set():
            try:
                self.sweep_once(overdue_seconds=overdue)
            except Exception:  # noqa: BLE001 - the database may be away for a while; try again next time
                log.exception("webhook sweep failed")
            overdue = self.settings.webhook_sweep_seconds
            self._stop.wait(self.settings.webhook_sweep_seconds)

    def sweep_once(self, *, overdue_seconds: float = 0.0) -> int:
        """Hand over deliveries due for at least ``overdue_seconds``; returns how many."""
        with session_scope(self.factory) as session:
            ids = due_deliveries(session=session, now=utcnow() - timedelta(seconds=overdue_seconds))
        for delivery_id in ids:
            self.dispatcher.deliver_webhook(delivery_id)
        if ids:
            log.info("webhook sweeper: %d due deliveries handed over", len(ids))
        return len(ids)
