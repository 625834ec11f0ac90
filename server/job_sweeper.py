"""The job sweeper: a thread in every API process that hands the work of dead workers on.

Every ``job_sweep_seconds`` it re-queues running jobs whose lease expired (``server.services.job_recovery``) and
sends them to a worker again: the embedded dispatcher in this process, or Celery. The database notices a dead
worker within a lease plus a sweep, whatever the broker's own redelivery timeout (an unacknowledged message on
Redis comes back only after its visibility timeout, an hour by default). Several sweepers are harmless: rows
are locked while they are taken (PostgreSQL), and a job is started by one worker only (an atomic
queued -> running), so a second hand-over of the same job finds it taken and does nothing.

In broker mode it also re-sends queued jobs whose message the broker may have lost (restarted without its data,
or down when the job was created): at start-up and on every pass, jobs waiting for longer than
``job_redispatch_seconds`` in a queue that held fewer messages than such jobs at this pass and the one before
(``lost_messages``). A broker that does not answer is left for the next pass; the API keeps answering meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from server.background import BackgroundThread
from server.db.session import session_scope
from server.observability.broker import queue_depths
from server.services.job_recovery import Work, lost_messages, pending_work, recover_lost_jobs
from server.services.jobs import JobKind, note_task_id
from server.settings import Settings
from server.worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


class JobSweeper(BackgroundThread):
    def __init__(self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.settings, self.factory, self.dispatcher = settings, factory, dispatcher
        self._short: frozenset[str] = frozenset()  # queues short of messages at the last pass (lost_messages)
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

    def resend_lost(self) -> int:
        """Broker mode: send again the queued jobs whose message may be lost; returns how many were sent. Nothing
        happens while the broker does not answer (its queue depths are what tells a backlog from a loss)."""
        if self.settings.embedded or not self.settings.broker_url:
            return 0
        try:
            depths = queue_depths(self.settings.broker_url, timeout=self.settings.broker_connect_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker: try again next pass
            log.warning("job sweeper: cannot reach the broker (%s); waiting jobs are checked next time",
                        type(exc).__name__)
            return 0
        with session_scope(self.factory) as session:
            decided = lost_messages(session=session, settings=self.settings, depths=depths, short_before=self._short)
        self._short = decided.short
        for job_id, kind, _ in decided.failed:
            log.error("job %s (%s): handed to the broker %d times and never started; failed", job_id, kind,
                      self.settings.job_max_dispatches)
        for job_id, kind, _ in decided.resend:
            log.warning("job %s (%s): still queued and its queue is short of messages; sent again", job_id, kind)
        self.dispatch(decided.resend)
        return len(decided.resend)

    def dispatch(self, work: Iterable[Work]) -> None:
        """Hand each committed queued job to a worker (a job another worker already took is left alone there)."""
        for job_id, kind, recording_id in work:
            try:
                task_id = self._send(job_id, kind, recording_id)
            except LookupError:
                log.warning("job %s of kind %s cannot be dispatched", job_id, kind)
                continue
            except Exception:  # noqa: BLE001 - one job that cannot be sent must not keep the others from going
                log.exception("job %s (%s): could not be handed to a worker; the next sweep tries again", job_id, kind)
                continue
            log.info("job %s (%s) handed to a worker", job_id, kind)
            if task_id is not None:
                with session_scope(self.factory) as session:
                    note_task_id(session=session, job_id=job_id, task_id=task_id)

    def _send(self, job_id: int, kind: str, recording_id: int | None) -> str | None:
        """The task id of the hand-over (None: nothing was sent, the broker is away); LookupError: no task does
        this kind of job."""
        if kind == JobKind.score and recording_id is not None:
            return self.dispatcher.process_recording(recording_id, job_id)
        if kind == JobKind.segment:
            return self.dispatcher.score_segment(job_id)
        if kind == JobKind.finetune:
            return self.dispatcher.finetune(job_id)
        if kind == JobKind.stream and recording_id is not None:
            return self.dispatcher.stream(recording_id, job_id)
        raise LookupError(kind)

    @staticmethod
    def _report(requeued: list[Work], failed: list[Work]) -> None:
        for job_id, kind, _ in requeued:
            log.warning("job %s (%s): its worker is gone; re-queued", job_id, kind)
        for job_id, kind, _ in failed:
            log.error("job %s (%s): its worker was lost in every attempt; failed", job_id, kind)

    def _run(self) -> None:
        first = True  # at start-up: only the waiting jobs (recover_at_startup took back the running ones)
        while first or not self._stop.wait(self.settings.job_sweep_seconds):
            try:
                if not first:
                    self.sweep_once()
                self.resend_lost()
            except Exception:  # noqa: BLE001 - the database may be away for a while; try again next time
                log.exception("job sweep failed")
            first = False
