"""Benchmark: the API under load. 100,000 events in a throwaway PostgreSQL database, the real server
(``wardwatch serve``, one process or ``--processes N``), 50 concurrent clients on loopback for 60 s against
``GET /api/v1/events?limit=50`` with filters and ``POST /api/v1/events/{id}/review``, authenticated with an API
token. Prints p50 / p95 / p99, requests/s and errors per endpoint, for each of ``--runs`` back-to-back runs (the
issue's report: the second run is where the pool ran dry).

``--repo DIR`` serves another checkout's code against the same data (e.g. ``--repo /work/main`` for the
"before" figures); the seeding always uses this checkout. ``--explain`` prints ``EXPLAIN ANALYZE`` of the list
queries. ``--profile`` runs the server under yappi (``benchmarks/profile_server.py``, every thread) and prints
where its CPU time went.

Usage: ``.venv/bin/python benchmarks/load.py [--events 100000] [--clients 50] [--seconds 60] [--runs 1]
[--processes 1] [--repo DIR] [--explain] [--profile] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import default_mix, run_load  # noqa: E402
from benchmarks.load_seed import create_database, drop_database, seed, settings_for  # noqa: E402

ADMIN = os.environ.get("WARDWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(repo: Path, database_url: str, data_dir: Path, port: int, processes: int,
                  log_path: Path, profile: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(repo), "WARDWATCH_DATABASE_URL": database_url,
           "WARDWATCH_DATA_DIR": str(data_dir), "WARDWATCH_AUTO_MIGRATE": "false", "OMP_NUM_THREADS": "1"}
    runner = [str(ROOT / "benchmarks" / "profile_server.py"), str(profile)] if profile else ["-m", "server.cli"]
    command = [sys.executable, *runner, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if processes > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(data_dir / "prometheus")
        (data_dir / "prometheus").mkdir(exist_ok=True)
        command += ["--workers", str(processes)]
    log = log_path.open("wb")
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not start in 120 s")


def _stop(process: subprocess.Popen[bytes], wait: float = 20) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _explain(database_url: str, label: str, since: str) -> None:
    """EXPLAIN ANALYZE of the list query's two statements as the server sends them (count, then the page)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    queries = {
        "count status=flagged": "SELECT count(*) FROM event WHERE status = 'flagged'",
        "page status=flagged": "SELECT * FROM event WHERE status = 'flagged' ORDER BY id DESC LIMIT 50",
        "count label+since": f"SELECT count(*) FROM event WHERE label = '{label}' AND start_wall >= '{since}'",
        "page label+since": f"SELECT * FROM event WHERE label = '{label}' AND start_wall >= '{since}' "
                            "ORDER BY id DESC LIMIT 50",
    }
    with psycopg.connect(url) as conn:
        for name, sql in queries.items():
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").fetchall()
            print(f"\n-- {name}\n" + "\n".join(row[0] for row in plan))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=1, help="back-to-back runs against the same server")
    parser.add_argument("--processes", type=int, default=1, help="server processes (uvicorn workers)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server code is measured")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the list queries")
    parser.add_argument("--profile", action="store_true", help="the server under yappi")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()

    name, url = create_database(ADMIN)
    data_dir = Path(tempfile.mkdtemp(prefix="wardwatch-load-"))
    try:
        started = time.perf_counter()
        seeded = seed(settings_for(url, data_dir), name, events=args.events)
        print(f"seeded {args.events} events into {name} in {time.perf_counter() - started:.1f} s")
        label = seeded.labels[1 % len(seeded.labels)]
        pick = default_mix(*seeded.event_ids, seeded.newest, label)
        if args.explain:
            since = (seeded.newest - timedelta(days=7)).isoformat()
            _explain(url, label, since)
        port = _free_port()
        log_path = data_dir / "server.log"
        profile = data_dir / "profile.txt" if args.profile else None
        server = _start_server(args.repo.resolve(), url, data_dir, port, args.processes, log_path, profile)
        try:
            print(f"server: {args.repo} ({args.processes} process(es)), {args.clients} clients, "
                  f"{args.seconds:g} s x {args.runs}")
            if profile is not None:
                os.kill(server.pid, signal.SIGUSR1)
            for run in range(args.runs):
                stats = asyncio.run(run_load(f"http://127.0.0.1:{port}", seeded.token, pick,
                                             clients=args.clients, seconds=args.seconds, seed=run + 1))
                print(stats.table(f"run {run + 1}"))
        finally:
            _stop(server, wait=300 if profile else 20)  # the profiler writes its figures at exit
        if profile is not None:
            print("\n## server profile (yappi, CPU time, figures above slowed by it)\n" + profile.read_text())
        text = log_path.read_text(errors="replace")
        print(f"server log: {text.count('Exception in ASGI application')} unhandled ASGI exceptions, "
              f"{text.count('QueuePool limit')} 'QueuePool limit' errors ({log_path})")
    finally:
        if not args.keep:
            drop_database(ADMIN, name)
        else:
            print(f"kept database {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
