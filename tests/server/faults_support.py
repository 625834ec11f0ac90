"""Helpers of the fault tests: real server and worker processes on loopback, started, killed with SIGKILL and
restarted; the database read directly (it, not the API, is the source of truth for job state)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Clip, Event, Explanation, Job
from server.services.intake import IntakeOptions, file_sha256, register_recording
from server.settings import Settings
from tests.conftest import free_port

#: a worker process: scores one recording's job, as a Celery task body would
WORKER = """
import sys
from server.bootstrap import make_worker_context
from server.worker.scoring import process_recording
from server.settings import Settings
ctx = make_worker_context(Settings())
process_recording(ctx, int(sys.argv[1]), int(sys.argv[2]))
"""


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process with ``settings``' data dir and database, small commits (a resume
    point every 2 clips) and the lease settings of the test."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WARDWATCH_")}
    env.update({
        "WARDWATCH_DATA_DIR": str(settings.data_dir), "WARDWATCH_DATABASE_URL": settings.sqlalchemy_url,
        "WARDWATCH_DEVICE": "cpu", "WARDWATCH_COMMIT_EVERY": "2", "WARDWATCH_SCORE_BATCH_SIZE": "1",
        "WARDWATCH_JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "WARDWATCH_JOB_HEARTBEAT_SECONDS": str(settings.job_heartbeat_seconds),
        "WARDWATCH_JOB_SWEEP_SECONDS": str(settings.job_sweep_seconds),
        "WARDWATCH_JOB_MAX_ATTEMPTS": str(settings.job_max_attempts),
    })
    env.update(extra)
    return env


def start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``wardwatch serve`` (embedded worker) in its own process."""
    args = [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())]
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def server_url(process: subprocess.Popen[bytes]) -> str:
    """The base URL of a server that :func:`start_server` started."""
    args = [str(arg) for arg in process.args]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{args[args.index('--port') + 1]}"


def start_worker(env: dict[str, str], recording_id: int, job_id: int, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", WORKER, str(recording_id), str(job_id)]
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def start_celery_worker(env: dict[str, str], log: Path, name: str) -> subprocess.Popen[bytes]:
    """A Celery worker as ``wardwatch worker`` runs it (solo pool, every queue) under the node name
    ``name@<host>``: two workers on one host need names of their own (RabbitMQ gives each node's remote-control
    queue to one connection only)."""
    args = [sys.executable, "-m", "celery", "-A", "server.worker.tasks", "worker", "--hostname", f"{name}@%h",
            "--queues", "inference,training,streams,webhooks", "--pool", "solo", "--loglevel", "INFO"]
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def kill(process: subprocess.Popen[bytes]) -> None:
    """``kill -9``: no clean-up of any kind runs in the victim."""
    process.send_signal(signal.SIGKILL)
    process.wait()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill(process)


def wait_for(what: Callable[[], Any], *, timeout: float, process: subprocess.Popen[bytes] | None = None,
             log: Path | None = None, interval: float = 0.1) -> Any:
    """Poll ``what()`` until it returns something truthy; fail with the log's tail on timeout or if ``process``
    ended meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := what()):
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        assert process is None or process.poll() is None, f"process ended early:\n{tail}"
        assert time.monotonic() < deadline, f"timed out:\n{tail}"
        time.sleep(interval)
    return value


def register_copy(settings: Settings, factory: sessionmaker[Session], video: Path, name: str) -> tuple[int, int]:
    """Register a copy of ``video`` as an upload leaves it: (recording id, its queued scoring job id)."""
    copy = settings.data_dir / "incoming" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, copy)
    public, job_id = register_recording(settings=settings, factory=factory, source=name, file=copy,
                                        sha256=file_sha256(copy), size=copy.stat().st_size,
                                        options=IntakeOptions(allow_duplicate=True), move_into_data_dir=True)
    return public.id, job_id


@dataclass(frozen=True)
class JobRow:
    status: str
    attempts: int
    lease_owner: str | None
    error: str | None
    result: dict | None


def job_row(factory: sessionmaker[Session], job_id: int) -> JobRow:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobRow(job.status.value, job.attempts, job.lease_owner, job.error, job.result)


def clip_count(factory: sessionmaker[Session], recording_id: int) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(Clip).where(Clip.recording_id == recording_id)) or 0


def scoring_outcome(factory: sessionmaker[Session], recording_id: int) -> tuple[list, list]:
    """Clips (index, start, end, scores) and events (label, start, end, peak, explanations) of a recording."""
    with session_scope(factory) as session:
        clips = session.execute(select(Clip.index, Clip.start, Clip.end, Clip.scores)
                                .where(Clip.recording_id == recording_id).order_by(Clip.index)).all()
        events = session.execute(
            select(Event.label, Event.start, Event.end, Event.peak_score,
                   select(func.count()).where(Explanation.event_id == Event.id).scalar_subquery())
            .where(Event.recording_id == recording_id).order_by(Event.start, Event.label)).all()
    return [tuple(row) for row in clips], [tuple(row) for row in events]


def same_outcome(mine: tuple[list, list], reference: tuple[list, list]) -> None:
    """Exactly the clips (scores within float noise) and the events of the reference run."""
    clips, events = mine
    ref_clips, ref_events = reference
    assert [c[:3] for c in clips] == [c[:3] for c in ref_clips]
    for (*_, scores), (*_, ref_scores) in zip(clips, ref_clips, strict=True):
        assert scores.keys() == ref_scores.keys()
        assert all(abs(scores[k] - ref_scores[k]) < 1e-4 for k in scores)
    assert [(e[0], e[1], e[2], e[4]) for e in events] == [(e[0], e[1], e[2], e[4]) for e in ref_events]
    assert all(abs(a[3] - b[3]) < 1e-4 for a, b in zip(events, ref_events, strict=True))
