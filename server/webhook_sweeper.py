"""The webhook sweeper: sends deliveries that are due but that nobody is about to send.

Deliveries are normally handed to the dispatcher right after their transaction commits, and each attempt
schedules the next. That hand-over is lost if the process dies after the commit, if the broker is down, or when
a retry timer dies with its process; the sweeper is what makes "nothing is lost" true. It runs in every API
process, once at start-up (everything due) and then every ``webhook_sweep_seconds`` (what has been due for
longer than that, so it does not race the timers and countdowns of deliveries in good health). Several
sweepers are harmless: an attempt is claimed in the database before it is sent (server.services.webhook_delivery).

A delivery a sweeper has queued is not queued again for a claim lease (``handed_over_at``): while the workers
are stuck, a pass every 30 s used to add the whole backlog to the executor queue or the broker each time.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from server.background import BackgroundThread
from server.db.base import utcnow
from server.db.session import session_scope
from server.services.webhook_delivery import lease_seconds, take_due_for_hand_over
from server.settings import Settings
from server.worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


class WebhookSweeper(BackgroundThread):
    def __init__(self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.settings, self.factory, self.dispatcher = settings, factory, dispatcher
        super().__init__("wardwatch-webhook-sweeper")

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
        """Hand over deliveries due for at least ``overdue_seconds`` and not handed over by a sweeper within a
        lease; returns how many. They are marked before they are queued (a crash in between delays them by a
        lease, never sends one twice at once)."""
        with session_scope(self.factory) as session:
            ids = take_due_for_hand_over(session=session, now=utcnow(), overdue_seconds=overdue_seconds,
                                         lease=lease_seconds(self.settings))
        for delivery_id in ids:
            self.dispatcher.deliver_webhook(delivery_id)
        if ids:
            log.info("webhook sweeper: %d due deliveries handed over", len(ids))
        return len(ids)
