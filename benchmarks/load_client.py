"""The load benchmark's clients: N asyncio tasks sharing one httpx client with N keep-alive
connections (made before the clock starts), sending requests from a
weighted mix back to back for a fixed time, and the per-endpoint figures (p50 / p95 / p99, requests/s, errors).

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

import httpx


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

    def table(self, title: str) -> str:
        lines = [f"## {title} ({self.seconds:.0f} s)",
                 f"{'endpoint':<22}{'ok':>7}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
                 f"{'503':>6}{'errors':>8}{'timeouts':>9}"]
        for name in sorted(self.outcomes):
            outcome = self.outcomes[name]
            lat = sorted(self.latencies[name])
            errors = sum(n for key, n in outcome.items() if key not in ("ok", "503", "timeout"))
            lines.append(f"{name:<22}{outcome['ok']:>7}{outcome['ok'] / self.seconds:>8.1f}"
                         f"{_pct(lat, 50):>9}{_pct(lat, 95):>9}{_pct(lat, 99):>9}"
                         f"{outcome['503']:>6}{errors:>8}{outcome['timeout']:>9}")
            other = {key: n for key, n in outcome.items() if key not in ("ok", "503", "timeout")}
            if other:
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


async def _client(client: httpx.AsyncClient, pick: Callable[[random.Random], Call], until: float, stats: Stats,
                  seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        call = pick(rng)
        started = time.perf_counter()
        try:
            response = await client.request(call.method, call.path, json=call.body)
        except httpx.TimeoutException:
            stats.add(call.name, time.perf_counter() - started, "timeout")
            continue
        except httpx.TransportError as exc:
            stats.add(call.name, time.perf_counter() - started, type(exc).__name__)
            await asyncio.sleep(0.05)
            continue
        elapsed = time.perf_counter() - started
        if response.status_code < 400:
            stats.add(call.name, elapsed, "ok")
        elif response.status_code == 503 and response.headers.get("retry-after"):
            stats.add(call.name, elapsed, "503")
            await asyncio.sleep(min(float(response.headers["retry-after"]), 1.0))
        else:
            stats.add(call.name, elapsed, str(response.status_code))


async def run_load(base: str, token: str, pick: Callable[[random.Random], Call], *, clients: int, seconds: float,
                   timeout: float = 10.0, seed: int = 1) -> Stats:
    """``clients`` concurrent clients for ``seconds``; each request in flight at the end is still counted."""
    stats = Stats()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, limits=limits) as client:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(_client(client, pick, until, stats, seed * 1000 + n) for n in range(clients)))
        stats.seconds = time.monotonic() - started
    return stats
