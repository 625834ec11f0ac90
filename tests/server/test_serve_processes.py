"""``wardwatch serve --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR``: two API processes on one port, and a scrape
of either sums the requests both answered (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.server.test_metrics import value

pytestmark = pytest.mark.postgres
TOKEN = "multiprocess-metrics-token"
REQUESTS = 40


def test_two_processes_one_port_metrics_summed(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {**os.environ, "WARDWATCH_DATABASE_URL": pg_url, "WARDWATCH_DATA_DIR": str(tmp_path / "data"),
           "WARDWATCH_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(shared), "WARDWATCH_API_THREADS": "4",
           "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        up = 0
        while time.monotonic() < deadline and up < 2:  # two answers in a row, and both processes' files exist
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                up = up + 1 if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                up = 0
            if len(list(shared.glob("histogram_*.db"))) < 2:
                up = 0
            time.sleep(0.5)
        for _ in range(REQUESTS):  # new connections: the kernel spreads them over both processes' accept()
            assert httpx.get(f"{base}/api/v1/health", timeout=10).status_code == 200
        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    count = value(scraped, "wardwatch_http_request_duration_seconds_count", method="GET",
                  route="/api/v1/health", status="200")
    assert count >= REQUESTS  # read from the shared directory, summed over the processes that answered
    assert len(list(shared.glob("histogram_*.db"))) >= 2  # each process writes its own values
