"""Benchmark: one long recording scored by Celery workers as segments, in one process or two.

A synthetic ward recording (``--seconds``, default 600) is scored through the production path -- PostgreSQL, a
private ``redis-server`` on a free port, real ``wardwatch worker`` processes, ``CeleryDispatcher`` -- in these
layouts, each on a fresh database, all in one run so the machine's load affects them alike:

* ``one piece``: ``WARDWATCH_SEGMENT_SECONDS`` longer than the recording, one worker (the baseline);
* ``1 process, solo``: segments of ``--segment-seconds`` (default 300: two), one worker running one task at a time;
* ``1 process, 2 threads``: the same segments side by side in one worker, sharing its batcher;
* ``2 processes``: two solo workers taking one segment each.

Printed per layout: the wall time from sending the task to the recording's job succeeding, split into the
scoring phase (first segment start to last segment end) and the finalisation (events and their media, once,
after the last segment), the speed-up of the scoring phase against the solo process, and the batcher's mean
forward batch and mixed batches, read from the workers' Prometheus metrics (``PROMETHEUS_MULTIPROC_DIR``).

Usage: ``.venv/bin/python benchmarks/segments.py [--seconds 600] [--segment-seconds 300] [--out DIR]`` (needs
PostgreSQL at ``WARDWATCH_TEST_PG`` or postgresql://postgres@127.0.0.1:5432/postgres, and ``redis-server``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.synthetic import SynthConfig, generate  # noqa: E402

PG_ADMIN = os.environ.get("WARDWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Layout:
    name: str
    processes: int
    concurrency: int
    segment_seconds: float


@dataclass
class Result:
    wall: float
    scoring: float | None  # first segment start to last segment end (None: one piece)
    finalising: float | None
    segments: int
    clips: int
    events: int
    mean_batch: float
    batches: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what, timeout: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.1)


def _run(layout: Layout, video: Path, out: Path) -> Result:
    import redis
    from sqlalchemy import select

    from server.bootstrap import ensure_active_model, open_database
    from server.db.session import session_scope
    from server.db.tables import Job
    from server.services.intake import IntakeOptions, file_sha256, register_recording
    from server.settings import Settings
    from server.worker.dispatch import CeleryDispatcher

    work = out / layout.name.replace(" ", "-").replace(",", "")
    shutil.rmtree(work, ignore_errors=True)
    metrics = work / "metrics"
    metrics.mkdir(parents=True)
    database = f"wardwatch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{database}"
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis_server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        _wait(lambda: _pings(redis.Redis(port=port)), 20, "redis-server did not start")
        settings = Settings(data_dir=work / "data", database_url=url, broker_url=broker, device="cpu",
                            segment_seconds=layout.segment_seconds)
        _engine, factory = open_database(settings)
        ensure_active_model(settings, factory)
        recording, job_id = register_recording(
            settings=settings, factory=factory, source=video.name, file=video, sha256=file_sha256(video),
            size=video.stat().st_size, options=IntakeOptions(allow_duplicate=True), move_into_data_dir=False)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("WARDWATCH_")},
               "PYTHONPATH": str(ROOT), "WARDWATCH_DATA_DIR": str(settings.data_dir), "WARDWATCH_DATABASE_URL": url,
               "WARDWATCH_BROKER_URL": broker, "WARDWATCH_DEVICE": "cpu", "WARDWATCH_AUTO_MIGRATE": "false",
               "WARDWATCH_SEGMENT_SECONDS": str(layout.segment_seconds), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        logs = [work / f"worker-{n}.log" for n in range(layout.processes)]
        for log in logs:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "server.cli", "worker", "--queues", "inference", "--concurrency",
                 str(layout.concurrency)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT))
        for log in logs:
            _wait(lambda log=log: " ready." in log.read_text(errors="replace"), 300, f"{log} never ready")
        dispatcher = CeleryDispatcher(settings)
        sent = time.time()
        dispatcher.process_recording(recording.id, job_id)

        def finished() -> bool:
            with session_scope(factory) as session:
                job = session.get(Job, job_id)
                return job is not None and job.status.value in ("succeeded", "failed")

        _wait(finished, 3600, "the recording did not finish")
        dispatcher.shutdown()
        with session_scope(factory) as session:
            parent = session.get(Job, job_id)
            assert parent is not None and parent.status.value == "succeeded", parent.error if parent else None
            segments = list(session.scalars(select(Job).where(Job.parent_id == job_id)))
            pieces = segments or [parent]
            first = min(j.started_at for j in pieces).timestamp()
            last = max((j.finished_at for j in segments), default=None)
            scored_at = last.timestamp() if last is not None else None  # one piece: not told apart
            done = parent.finished_at.timestamp()
            clips, events = parent.result["clips"], parent.result["events"]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        redis_server.terminate()
        redis_server.wait(timeout=20)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    size, batches = _batch_metrics(metrics)
    return Result(wall=done - sent, scoring=None if scored_at is None else scored_at - first,
                  finalising=None if scored_at is None else done - scored_at, segments=len(segments), clips=clips,
                  events=events, mean_batch=size / batches if batches else 0.0, batches=int(batches))


def _pings(client) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _batch_metrics(path: Path) -> tuple[float, float]:
    """(clips in forward batches, forward batches) summed over the workers."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    size = registry.get_sample_value("wardwatch_inference_batch_size_sum") or 0.0
    batches = registry.get_sample_value("wardwatch_inference_batch_size_count") or 0.0
    return size, batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the synthetic recording")
    parser.add_argument("--segment-seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    layouts = [Layout("one piece", 1, 1, args.seconds * 10), Layout("1 process, solo", 1, 1, args.segment_seconds),
               Layout("1 process, 2 threads", 1, 2, args.segment_seconds),
               Layout("2 processes", 2, 1, args.segment_seconds)]
    with tempfile.TemporaryDirectory(prefix="wardwatch-segments-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        folder = out / "video"
        video = folder / "ward.mp4"
        if not video.exists():
            started = time.monotonic()
            video = generate(folder, SynthConfig(seconds=args.seconds, seed=3)).video
            print(f"generated a {args.seconds:g} s synthetic recording in {time.monotonic() - started:.0f} s")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        results: dict[str, Result] = {}
        for layout in layouts:
            result = _run(layout, video, out)
            results[layout.name] = result
            split = ("" if result.scoring is None else
                     f" = scoring {result.scoring:6.1f} s + finalising {result.finalising:5.1f} s")
            print(f"{layout.name:>22}: {result.wall:6.1f} s wall{split} | {result.segments} segments, {result.clips} "
                  f"clips, {result.events} events | mean batch {result.mean_batch:.2f} over {result.batches} "
                  f"batches | load {os.getloadavg()[0]:.1f}", flush=True)
        solo = results["1 process, solo"]
        for name in ("1 process, 2 threads", "2 processes"):
            other = results[name]
            print(f"{name} vs 1 process solo: scoring phase {solo.scoring / other.scoring:.2f}x, "  # type: ignore[operator]
                  f"whole recording {solo.wall / other.wall:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
