"""Transient errors of a task: which they are, how long to wait before the next try, and giving up.

A database connection that drops (PostgreSQL restarted, a backend terminated, a pool that cannot connect for a
moment, SQLite busy past its timeout) or a broker that is away for a moment is not the recording's fault: the
task hands its job back (``running -> queued``, the attempt not counted against the job) and is tried again
after an exponential backoff, a bounded number of times (``WARDWATCH_TASK_MAX_RETRIES``). Nothing is half
written meanwhile: every batch of clips commits in one transaction, and the retry resumes after the committed
ones. Anything else (a broken video, a bug) fails the job at once, as before.
"""

from __future__ import annotations

import logging
import random

import amqp.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Job, Recording
from server.services.jobs import LIVE, close_children, fail_job, fail_parent_of
from server.services.recordings import mark_failed
from server.settings import Settings

log = logging.getLogger(__name__)

#: errors of the connection, not of the work: the database or the broker was away for a moment
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # connection lost, server shutting down, SQLite locked past its timeout
    sqlalchemy.exc.InterfaceError,  # a connection already closed
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection within the pool timeout
    kombu.exceptions.OperationalError,  # the broker refused or dropped the connection (Celery's own wrapper)
    amqp.exceptions.RecoverableConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,  # refused, reset, broken pipe
)


class RetryLater(Exception):  # noqa: N818 - a signal to the task runner, not an error of the work
    """The task met a transient error and handed its job back: run it again after a backoff.

    ``job_id`` is the job to fail if the retries run out (None: a run without a job)."""

    def __init__(self, job_id: int | None, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.job_id = job_id
        self.reason = f"{type(cause).__name__}: {cause}"


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` (or an exception it was raised from) a dropped connection rather than a failure of the work?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TRANSIENT):
            return not _permanent(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _permanent(exc: BaseException) -> bool:
    """OperationalErrors that will not go away by waiting: a missing table or a schema the code does not know."""
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.OperationalError) and ("no such table" in text or "no such column" in text)


def retry_delay(retries: int, settings: Settings) -> float:
    """Seconds before try ``retries + 1``: base * 2^retries, capped, with up to 25 % jitter so the workers that
    lost the same database do not all come back at the same instant."""
    delay = min(settings.task_retry_backoff_max_seconds, settings.task_retry_backoff_seconds * 2 ** retries)
    return delay * (1.0 + 0.25 * random.random())  # noqa: S311 - jitter, not a secret


def give_up(factory: sessionmaker[Session], job_id: int | None, reason: str, retries: int) -> None:
    """The retries ran out: fail the job (and, for a segment, its recording's scoring job) and the recording."""
    message = f"{reason} (gave up after {retries} retries)"
    log.error("job %s: %s", job_id, message)
    if job_id is None:
        return
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in LIVE:
            return
        fail_job(session=session, job_id=job_id, reason=message)
        close_children(session=session, parent_id=job_id)
        fail_parent_of(session=session, segment=job, reason=f"segment {job.segment}: {message}")
        recording = session.get(Recording, job.recording_id) if job.recording_id is not None else None
        if recording is not None:
            mark_failed(recording=recording, reason=message)
