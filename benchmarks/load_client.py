"""The load benchmark's clients and their figures (p50 / p95 / p99, requests/s, errors per endpoint).

aiohttp, not httpx: its HTTP parser is C, and the load generator shares the server's 2 cores (with httpx it
spent about as much CPU per request as the server did). Two ways to load the server, both over one client
session with N keep-alive connections:

- **closed loop** (``run_load``): N clients send requests from a weighted mix back to back, each waiting for
  its answer before the next, for a fixed time. The server sets the pace: by Little's law the latency is
  N / throughput, so with 50 clients a p99 under 50 ms needs over 1,000 answers/s.
- **open loop** (``run_open_loop``): requests arrive at a fixed mean rate (a Poisson process, what many
  independent review stations add up to) whatever the server does. Latency is counted from the moment a request
  was due, not sent, so a server that falls behind shows it (no "coordinated omission": a closed-loop client that
  waits sends less and hides the queue). A request due while all N connections are busy waits for one; a request
  not even started ``timeout`` after it was due counts as a timeout.

An answer that never comes within ``timeout`` is counted as a timeout; a 503 with ``Retry-After`` (the server
shedding load on purpose) is counted apart from other errors.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    body: dict[str, object] | None = None


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: float = 0.0

    def add(self, name: str, seconds: float, outcome: str) -> None:
        self.outcomes[name][outcome] += 1
        if outcome == "ok":
            self.latencies[name].append(seconds)

    @property
    def answered(self) -> int:
        return sum(outcome["ok"] for outcome in self.outcomes.values())

    def merged(self, prefix: str) -> tuple[Counter[str], list[float]]:
        """Outcomes and latencies of every endpoint whose name starts with ``prefix``."""
        outcome: Counter[str] = Counter()
        latencies: list[float] = []
        for name in self.outcomes:
            if name.startswith(prefix):
                outcome.update(self.outcomes[name])
                latencies += self.latencies[name]
        return outcome, latencies

    def table(self, title: str) -> str:
        lines = [f"## {title} ({self.seconds:.0f} s)",
                 f"{'endpoint':<22}{'ok':>7}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
                 f"{'503':>6}{'errors':>8}{'timeouts':>9}"]
        rows = {name: (self.outcomes[name], self.latencies[name]) for name in sorted(self.outcomes)}
        rows["(all lists)"] = self.merged("list")
        rows["(all)"] = self.merged("")
        for name, (outcome, latencies) in rows.items():
            lat = sorted(latencies)
            errors = sum(n for key, n in outcome.items() if key not in ("ok", "503", "timeout"))
            lines.append(f"{name:<22}{outcome['ok']:>7}{outcome['ok'] / self.seconds:>8.1f}"
                         f"{_pct(lat, 50):>9}{_pct(lat, 95):>9}{_pct(lat, 99):>9}"
                         f"{outcome['503']:>6}{errors:>8}{outcome['timeout']:>9}")
            other = {key: n for key, n in outcome.items() if key not in ("ok", "503", "timeout")}
            if other and not name.startswith("("):
                lines.append(f"{'':<22}errors by kind: {dict(other)}")
        return "\n".join(lines)


def _pct(sorted_values: list[float], pct: float) -> str:
    if not sorted_values:
        return "-"
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return f"{sorted_values[index] * 1000:.0f}"


def default_mix(first_id: int, last_id: int, newest: datetime, label: str) -> Callable[[random.Random], Call]:
    """What a ward's review stations and a hospital system do: mostly list the queue (flagged, or one label in
    the last week), sometimes review an event."""
    since = (newest - timedelta(days=7)).isoformat().replace("+00:00", "Z")

    def pick(rng: random.Random) -> Call:
        roll = rng.random()
        if roll < 0.45:
            return Call("list status=flagged", "GET", "/api/v1/events?status=flagged&limit=50")
        if roll < 0.8:
            return Call("list label+since", "GET", f"/api/v1/events?label={label}&since={since}&limit=50")
        decision = rng.choice(["confirmed", "rejected"])
        return Call("review", "POST", f"/api/v1/events/{rng.randint(first_id, last_id)}/review",
                    {"decision": decision})

    return pick


def health_mix() -> Callable[[random.Random], Call]:
    """Only ``GET /api/v1/health`` (no database, no authentication): the ceiling of the HTTP stack and of the
    load generator on this machine, which no endpoint that does work can beat."""
    call = Call("health", "GET", "/api/v1/health")
    return lambda _rng: call


def _session(base: str, token: str, connections: int, timeout: float) -> aiohttp.ClientSession:
    """At most ``connections`` keep-alive connections; ``timeout`` covers waiting for one too."""
    return aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 connector=aiohttp.TCPConnector(limit=connections, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


async def _send(client: aiohttp.ClientSession, call: Call, stats: Stats, due: float) -> float:
    """One request; its latency counts from ``due`` (perf_counter). Returns the seconds a client should wait
    before its next request (a 503's Retry-After, a broken connection's pause), else 0."""
    try:
        async with client.request(call.method, call.path, json=call.body) as response:
            await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except TimeoutError:
        stats.add(call.name, time.perf_counter() - due, "timeout")
        return 0.0
    except aiohttp.ClientError as exc:
        stats.add(call.name, time.perf_counter() - due, type(exc).__name__)
        return 0.05
    elapsed = time.perf_counter() - due
    if status < 400:
        stats.add(call.name, elapsed, "ok")
    elif status == 503 and retry_after:
        stats.add(call.name, elapsed, "503")
        return min(float(retry_after), 1.0)
    else:
        stats.add(call.name, elapsed, str(status))
    return 0.0


async def _client(client: aiohttp.ClientSession, pick: Callable[[random.Random], Call], until: float, stats: Stats,
                  seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        pause = await _send(client, pick(rng), stats, time.perf_counter())
        if pause:
            await asyncio.sleep(pause)


async def _open(client: aiohttp.ClientSession, connections: int) -> None:
    """Make the keep-alive connections before the clock starts."""
    async def one() -> None:
        async with client.get("/api/v1/health") as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(connections)))


async def run_load(base: str, token: str, pick: Callable[[random.Random], Call], *, clients: int, seconds: float,
                   timeout: float = 10.0, seed: int = 1) -> Stats:
    """``clients`` concurrent clients for ``seconds``; each request in flight at the end is still counted."""
    stats = Stats()
    async with _session(base, token, clients, timeout) as client:
        await _open(client, clients)
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(_client(client, pick, until, stats, seed * 1000 + n) for n in range(clients)))
        stats.seconds = time.monotonic() - started
    return stats


async def run_open_loop(base: str, token: str, pick: Callable[[random.Random], Call], *, rate: float,
                        seconds: float, connections: int, timeout: float = 10.0, seed: int = 1) -> Stats:
    """Requests due at ``rate`` per second on average (exponential gaps) for ``seconds``, over at most
    ``connections`` connections at once; waits for the last answers (or their timeout) before it returns. A
    request due while every connection is busy queues for one; past ``timeout`` in all it is a timeout."""
    stats = Stats()
    rng = random.Random(seed)
    async with _session(base, token, connections, timeout) as client:
        await _open(client, connections)
        tasks: set[asyncio.Task[float]] = set()
        started = time.perf_counter()
        due = started
        while (due := due + rng.expovariate(rate)) < started + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_send(client, pick(rng), stats, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        stats.seconds = time.perf_counter() - started  # the answers still due at the end included
    return stats
