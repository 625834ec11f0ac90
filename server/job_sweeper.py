"""The job sweeper: a thread in every API process that hands the work of dead workers on.

Every ``job_sweep_seconds`` it re-queues running jobs whose lease expired (``server.services.job_recovery``) and
sends them to a worker again: the embedded dispatcher in this process, or Celery. The database notices a dead
worker within a lease plus a sweep, whatever the broker's own redelivery timeout (an unacknowledged message on
Redis comes back only after its visibility timeout, an hour by default). Several sweepers are harmless: rows
are locked while they are taken (PostgreSQL), and a job is started by one worker only (an atomic
queued -> running), so a second hand-over of the same job finds it taken and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from server.background import BackgroundThread
from server.db.session import session_scope
from server.services.job_recovery import Work, pending_work, recover_lost_jobs
from server.services.jobs import JobKind, note_task_id
from server.settings import Settings
from server.worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


class JobSweeper(BackgroundThread):
    def __init__(self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.settings, self.factory, self.dispatcher = settings, factory, dispatcher
        super().__init__("wardwatch-job-sweeper")

    def recover_at_startup(self) -> None:
        """Before serving: take back the jobs of dead owners (expired leases, dead pids of this host) and, in
        embedded mode, start everything that was waiting -- nothing else will."""
        with session_scope(self.factory) as session:
            done = recover_lost_jobs(session=session, settings=self.settings, at_startup=True)
            work = pending_work(session=session) if self.settings.embedded else done.requeued
        self._report(done.requeued, done.failed)
        self.dispatch(work)

    def sweep_once(self) -> int:
        """One pass: re-queue and re-dispatch jobs whose lease expired; returns how many were re-queued."""
        with session_scope(self.factory) as session:
            done = recover_lost_jobs(session=session, settings=self.settings)
        self._report(done.requeued, done.failed)
        self.dispatch(done.requeued)
        return len(done.requeued)

    def dispatch(self, work: Iterable[Work]) -> None:
        """Hand each committed queued job to a worker (a job another worker already took is left alone there)."""
        for job_id, kind, recording_id in work:
            if kind == JobKind.score and recording_id is not None:
                task_id = self.dispatcher.process_recording(recording_id, job_id)
            elif kind == JobKind.segment:
                task_id = self.dispatcher.score_segment(job_id)
            elif kind == JobKind.finetune:
                task_id = self.dispatcher.finetune(job_id)
            elif kind == JobKind.stream and recording_id is not None:
                task_id = self.dispatcher.stream(recording_id, job_id)
            else:
                log.warning("job %s of kind %s cannot be dispatched", job_id, kind)
                continue
            log.info("job %s (%s) handed to a worker", job_id, kind)
            if task_id is not None:
                with session_scope(self.factory) as session:
                    note_task_id(session=session, job_id=job_id, task_id=task_id)

    @staticmethod
    def _report(requeued: list[Work], failed: list[Work]) -> None:
        for job_id, kind, _ in requeued:
            log.warning("job %s (%s): its worker is gone; re-queued", job_id, kind)
        for job_id, kind, _ in failed:
            log.error("job %s (%s): its worker was lost in every attempt; failed", job_id, kind)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.job_sweep_seconds):
            try:
                self.sweep_once()
            except Exception:  # noqa: BLE001 - the database may be away for a while; try again next time
                log.exception("job sweep failed")
