"""Benchmark: the API under load. 100,000 events in a throwaway PostgreSQL database, the real server
(``wardwatch serve``, one process or ``--processes N``), clients on loopback against
``GET /api/v1/events?limit=50`` with filters and ``POST /api/v1/events/{id}/review``, authenticated with an API
token. Prints p50 / p95 / p99, requests/s and errors per endpoint, and the CPU time each answered request cost
the server, PostgreSQL and the load generator (which runs on the same cores: its share is printed too).

Two kinds of run (see ``benchmarks/load_client.py``):

- ``--runs N`` closed-loop runs: ``--clients`` clients back to back (the issue's 50; N runs back to back against
  one server, as the issue reported: the second run is where the pool ran dry);
- ``--open-rates R1,R2,...`` open-loop runs: requests due at R per second in all (e.g. 50 review stations at one
  request a second each is 50), over at most ``--clients`` connections; the highest rate whose list p99 stays
  under 50 ms is the sustainable one.

``--repo DIR`` serves another checkout's code against the same data. ``--baseline DIR`` measures that checkout
and this one alternately, run for run on the same database, and prints the ratio (the machine is shared, so
only figures taken back to back compare). The seeding always uses this checkout (its schema). ``--explain``
prints ``EXPLAIN ANALYZE`` of the statements one queue page sends. ``--profile`` runs the server under yappi
(``benchmarks/profile_server.py``, every thread) and prints where its CPU time went.

Usage: ``.venv/bin/python benchmarks/load.py [--events 100000] [--clients 50] [--seconds 60] [--runs 1]
[--open-rates 50,100] [--processes 1] [--mix queue|health] [--repo DIR | --baseline DIR]
[--server-env KEY=VALUE] [--explain] [--profile] [--keep]``.
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
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import Call, Stats, default_mix, health_mix, run_load, run_open_loop  # noqa: E402
from benchmarks.load_cpu import CpuMeter, CpuUse  # noqa: E402
from benchmarks.load_seed import Seeded, create_database, drop_database, seed, settings_for  # noqa: E402

ADMIN = os.environ.get("WARDWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_P99 = 0.050  # the target for the list, seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(repo: Path, database_url: str, data_dir: Path, port: int, processes: int,
                  log_path: Path, profile: Path | None = None, extra_env: dict[str, str] | None = None
                  ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(repo), "WARDWATCH_DATABASE_URL": database_url,
           "WARDWATCH_DATA_DIR": str(data_dir), "WARDWATCH_AUTO_MIGRATE": "false", "OMP_NUM_THREADS": "1",
           **(extra_env or {})}
    runner = [str(ROOT / "benchmarks" / "profile_server.py"), str(profile)] if profile else ["-m", "server.cli"]
    command = [sys.executable, *runner, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if processes > 1:
        prometheus = data_dir / f"prometheus-{port}"
        prometheus.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prometheus)
        command += ["--workers", str(processes)]
    log = log_path.open("ab")
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


@dataclass
class Server:
    """One checkout's server on the benchmark database, with the meter of its CPU use."""

    repo: Path
    base: str
    process: subprocess.Popen[bytes]
    meter: CpuMeter


@contextmanager
def serving(repo: Path, seeded: Seeded, data_dir: Path, processes: int, profile: Path | None = None,
            extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    port = _free_port()
    log_path = data_dir / "server.log"
    process = _start_server(repo, seeded.database_url, data_dir, port, processes, log_path, profile, extra_env)
    try:
        yield Server(repo, f"http://127.0.0.1:{port}", process, CpuMeter(process.pid, ADMIN, seeded.database_name))
    finally:
        _stop(process, wait=300 if profile else 20)  # the profiler writes its figures at exit


@dataclass(frozen=True)
class Measured:
    stats: Stats
    cpu: CpuUse


def measure(server: Server, seeded: Seeded, pick: Callable[..., Call], *, clients: int, seconds: float, seed: int,
            rate: float | None = None) -> Measured:
    """One closed-loop run (``rate`` None) or one open-loop run at ``rate`` requests/s."""
    before = server.meter.sample()
    if rate is None:
        stats = asyncio.run(run_load(server.base, seeded.token, pick, clients=clients, seconds=seconds, seed=seed))
    else:
        stats = asyncio.run(run_open_loop(server.base, seeded.token, pick, rate=rate, seconds=seconds,
                                          connections=clients, seed=seed))
    return Measured(stats, server.meter.since(before))


def warm_up(server: Server, seeded: Seeded, pick: Callable[..., Call], seconds: float) -> None:
    """Unmeasured requests of the same mix at a gentle 20/s, so the first measured run does not carry the
    server's one-time costs (each pooled connection's first statements fill its PostgreSQL backend's catalog
    cache; SQLAlchemy compiles each statement shape once)."""
    if seconds > 0:
        asyncio.run(run_open_loop(server.base, seeded.token, pick, rate=20.0, seconds=seconds, connections=20,
                                  seed=0))


def report(title: str, measured: Measured) -> None:
    print(measured.stats.table(title))
    print(measured.cpu.per_request(measured.stats.answered))


def _lists_p99(stats: Stats) -> float | None:
    """p99 of the lists, or of every request when the mix has no list (``--mix health``)."""
    _outcome, latencies = stats.merged("list")
    if not latencies:
        _outcome, latencies = stats.merged("")
    if not latencies:
        return None
    latencies.sort()
    return latencies[min(len(latencies) - 1, max(0, round(0.99 * len(latencies)) - 1))]


def verdict(measured: Measured, rate: float | None) -> str:
    stats = measured.stats
    outcome, _ = stats.merged("")
    failures = sum(n for key, n in outcome.items() if key != "ok")
    p99 = _lists_p99(stats)
    met = p99 is not None and p99 < TARGET_P99 and failures == 0
    kind = "closed loop" if rate is None else f"open loop at {rate:g} req/s offered"
    shown = f"{p99 * 1000:.0f} ms" if p99 is not None else "-"
    return (f"target (list p99 < 50 ms, no errors), {kind}: {'MET' if met else 'NOT met'} "
            f"(list p99 {shown}, {failures} failed requests, {stats.answered / stats.seconds:.0f} answered/s)")


def server_log_summary(data_dir: Path) -> str:
    path = data_dir / "server.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return (f"server log: {text.count('Exception in ASGI application')} unhandled ASGI exceptions, "
            f"{text.count('QueuePool limit')} 'QueuePool limit' errors ({path})")


def _explain(seeded: Seeded, label: str) -> None:
    from benchmarks.load_explain import explain
    from server.db.tables import EventStatus
    from server.services.event_queue import EventFilter

    since = seeded.newest - timedelta(days=7)
    print(explain(seeded.database_url, {"status=flagged": EventFilter(status=EventStatus.flagged),
                                        "label+since": EventFilter(label=label, since=since)}))


def compare(args: argparse.Namespace, seeded: Seeded, pick: Callable[..., Call], data_dir: Path) -> None:
    """The baseline checkout and this one alternately, run for run, then the ratio of their means."""
    repos = {"baseline": args.baseline.resolve(), "this checkout": args.repo.resolve()}
    rates: list[float | None] = [None] * args.runs + list(args.open_rates)
    results: dict[str, dict[float | None, list[Measured]]] = {name: defaultdict(list) for name in repos}
    for number, rate in enumerate(rates):
        for name, repo in repos.items():
            with serving(repo, seeded, data_dir, args.processes, extra_env=args.env) as server:
                warm_up(server, seeded, pick, args.warmup)
                measured = measure(server, seeded, pick, clients=args.clients, seconds=args.seconds,
                                   seed=number + 1, rate=rate)
            kind = "closed loop" if rate is None else f"open loop, {rate:g} req/s offered"
            report(f"{name} ({repo}), {kind}", measured)
            print(verdict(measured, rate))
            results[name][rate].append(measured)
    print("\n## ratio, this checkout / baseline (means of the runs above)")
    for rate in dict.fromkeys(rates):
        kind = "closed loop" if rate is None else f"open loop at {rate:g} req/s"
        rows = {}
        for name in repos:
            runs = results[name][rate]
            answered = sum(m.stats.answered for m in runs)
            rows[name] = (answered / sum(m.stats.seconds for m in runs),
                          1000 * sum(m.cpu.server for m in runs) / max(answered, 1),
                          1000 * sum(m.cpu.database for m in runs) / max(answered, 1))
        base, this = rows["baseline"], rows["this checkout"]
        print(f"{kind}: answered/s {base[0]:.1f} -> {this[0]:.1f} (x{this[0] / base[0]:.1f}); server CPU per "
              f"request {base[1]:.1f} -> {this[1]:.1f} ms (/{base[1] / max(this[1], 1e-9):.1f}); PostgreSQL CPU per "
              f"request {base[2]:.1f} -> {this[2]:.1f} ms (/{base[2] / max(this[2], 1e-9):.1f})")


def single(args: argparse.Namespace, seeded: Seeded, pick: Callable[..., Call], data_dir: Path) -> None:
    """One server; the closed-loop runs back to back, then the open-loop rates."""
    profile = data_dir / "profile.txt" if args.profile else None
    with serving(args.repo.resolve(), seeded, data_dir, args.processes, profile, args.env) as server:
        print(f"server: {args.repo} ({args.processes} process(es){', ' + str(args.env) if args.env else ''}), "
              f"{args.clients} clients, {args.seconds:g} s "
              f"x {args.runs} closed-loop run(s), open-loop rates {list(args.open_rates) or 'none'}")
        warm_up(server, seeded, pick, args.warmup)
        if profile is not None:
            os.kill(server.process.pid, signal.SIGUSR1)
        rates: list[float | None] = [None] * args.runs + list(args.open_rates)
        for number, rate in enumerate(rates):
            measured = measure(server, seeded, pick, clients=args.clients, seconds=args.seconds, seed=number + 1,
                               rate=rate)
            report(f"run {number + 1}, " + ("closed loop" if rate is None else f"open loop, {rate:g} req/s offered"),
                   measured)
            print(verdict(measured, rate))
    if profile is not None:
        print("\n## server profile (yappi, CPU time, figures above slowed by it)\n" + profile.read_text())


def _env(text: str) -> dict[str, str]:
    key, _, value = text.partition("=")
    return {key: value}


def _rates(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50, help="closed loop: clients; open loop: connections")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=1, help="closed-loop runs (back to back against one server)")
    parser.add_argument("--open-rates", type=_rates, default=[], help="open-loop runs at these requests/s, e.g. 50,100")
    parser.add_argument("--processes", type=int, default=1, help="server processes (uvicorn workers)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server code is measured")
    parser.add_argument("--baseline", type=Path, help="also measure this checkout, alternately, and print the ratio")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of unmeasured requests (20/s) after each server start")
    parser.add_argument("--mix", choices=["queue", "health"], default="queue",
                        help="queue: the issue's lists and reviews; health: /api/v1/health only, the ceiling of "
                             "the HTTP stack and the load generator on this machine")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the queue's statements")
    parser.add_argument("--profile", action="store_true", help="the server under yappi")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--server-env", type=_env, action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the server processes, e.g. WARDWATCH_API_THREADS=8 (repeatable)")
    args = parser.parse_args()
    args.env = {key: value for item in args.server_env for key, value in item.items()}

    name, url = create_database(ADMIN)
    data_dir = Path(tempfile.mkdtemp(prefix="wardwatch-load-"))
    try:
        started = time.perf_counter()
        seeded = seed(settings_for(url, data_dir), name, events=args.events)
        print(f"seeded {args.events} events into {name} in {time.perf_counter() - started:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f} before the runs (other work on the machine)")
        label = seeded.labels[1 % len(seeded.labels)]
        pick = health_mix() if args.mix == "health" else default_mix(*seeded.event_ids, seeded.newest, label)
        if args.explain:
            _explain(seeded, label)
        if args.baseline is not None:
            compare(args, seeded, pick, data_dir)
        else:
            single(args, seeded, pick, data_dir)
        print(f"load average {os.getloadavg()[0]:.1f} after the runs")
        print(server_log_summary(data_dir))
    finally:
        if not args.keep:
            drop_database(ADMIN, name)
        else:
            print(f"kept database {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
