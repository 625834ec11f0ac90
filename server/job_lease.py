"""The heartbeat of a running job: a small thread that renews the job's lease while its owner works.

Why a thread and not the progress writes alone: a scoring batch, a training epoch or a stalled stream can take
longer than a lease, and a lease must only expire when the process is gone. The thread renews every
``job_heartbeat_seconds``; if a renewal finds the lease taken away (the sweeper re-queued the job because this
process looked dead), ``lost`` is set and the worker stops at its next check without writing anything more.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Job, JobStatus
from server.services.jobs import LeaseLost, heartbeat
from server.settings import Settings

log = logging.getLogger(__name__)


class JobLease:
    """``with JobLease(...) as lease:`` keeps job ``job_id`` leased to ``owner`` for the block."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, job_id: int, owner: str) -> None:
        self.factory, self.settings, self.job_id, self.owner = factory, settings, job_id, owner
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"wardwatch-lease-{job_id}")

    def __enter__(self) -> JobLease:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=self.settings.job_heartbeat_seconds + 5)

    def check(self) -> None:
        """Raise LeaseLost once the lease is gone (called by the worker between units of work)."""
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id}: lease of {self.owner} lost")

    def renew(self, session: Session, *, progress: float | None = None, result: dict | None = None) -> None:
        """Renew now within the caller's transaction (its progress write); raises LeaseLost."""
        self.check()
        try:
            heartbeat(session=session, job_id=self.job_id, owner=self.owner,
                      lease_seconds=self.settings.job_lease_seconds, progress=progress, result=result)
        except LeaseLost:
            self.lost.set()
            raise

    def _beat(self) -> None:
        while not self._done.wait(self.settings.job_heartbeat_seconds):
            try:
                with session_scope(self.factory) as session:
                    heartbeat(session=session, job_id=self.job_id, owner=self.owner,
                              lease_seconds=self.settings.job_lease_seconds)
            except LeaseLost:
                self.lost.set()
                self._report_lost()
                return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next beat, the lease has slack
                log.exception("job %s: heartbeat failed", self.job_id)

    def _report_lost(self) -> None:
        """Say why the lease went. A beat that lands between the owner's closing commit and the end of the ``with``
        block finds the job succeeded (only its owner can close a job so): the normal end, not a loss to warn of."""
        try:
            with session_scope(self.factory) as session:
                job = session.get(Job, self.job_id)
                status, owner = (job.status, job.lease_owner) if job is not None else (None, None)
        except Exception:  # noqa: BLE001 - the report is best effort; the worker stops either way
            status, owner = None, None
        if status == JobStatus.succeeded and owner is None:
            log.debug("job %s: finished (%s); heartbeat stopped", self.job_id, status)
        else:
            log.warning("job %s: lease lost (re-queued or closed elsewhere: %s); stopping", self.job_id,
                        status or "unknown")
