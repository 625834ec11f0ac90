"""CPU time spent per request by each side of the load benchmark: the server's processes, the PostgreSQL backends
serving its database, and the load generator itself (all three share the machine's 2 cores).

Why CPU time and not only latency: other helpers run tests on the same cores, so latencies and requests/s move
with whatever else runs, while the CPU seconds a request costs barely do. Read from ``/proc`` (Linux): a
process's ``utime + stime`` in clock ticks, summed over every process of the server's session (uvicorn's worker
processes included) and over the backends ``pg_stat_activity`` lists for the benchmark's database.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

import psycopg

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    return text[text.rindex(")") + 2:].split()


def _cpu_seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of proc(5))


def session_cpu(session_id: int) -> float:
    """CPU seconds of every live process in the session ``session_id`` (the server started its own session)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None and int(fields[3]) == session_id:
            total += _cpu_seconds(fields)
    return total


def backend_pids(admin_url: str, database: str) -> list[int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(row[0]) for row in rows]


def pids_cpu(pids: list[int]) -> dict[int, float]:
    return {pid: _cpu_seconds(fields) for pid in pids if (fields := _stat(pid)) is not None}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuSample:
    server: float
    database: dict[int, float]
    client: float


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used between two samples."""

    server: float
    database: float
    client: float

    def per_request(self, requests: int) -> str:
        if requests == 0:
            return "no requests answered"
        ms = [1000 * value / requests for value in (self.server, self.database, self.client)]
        return (f"CPU per answered request: server {ms[0]:.1f} ms, PostgreSQL {ms[1]:.1f} ms, "
                f"load generator {ms[2]:.1f} ms (total {sum(ms):.1f} ms; "
                f"{self.server + self.database + self.client:.1f} CPU s in all)")


class CpuMeter:
    """Samples the server's session, its database's backends and this process."""

    def __init__(self, server_session: int, admin_url: str, database: str) -> None:
        self.server_session = server_session
        self.admin_url = admin_url
        self.database = database

    def sample(self) -> CpuSample:
        return CpuSample(session_cpu(self.server_session),
                         pids_cpu(backend_pids(self.admin_url, self.database)), own_cpu())

    def since(self, before: CpuSample) -> CpuUse:
        after = self.sample()
        # a backend that connected during the run counts from zero; one that left is lost (the pool keeps them)
        database = sum(cpu - before.database.get(pid, 0.0) for pid, cpu in after.database.items())
        return CpuUse(after.server - before.server, database, after.client - before.client)
