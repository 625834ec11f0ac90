"""``GET /metrics``: the Prometheus text format, for a scraper allowed by ``metrics_allowed``.

Who may scrape (docs/metrics.md): a request carrying ``Authorization: Bearer <WARDWATCH_METRICS_TOKEN>``, or,
with ``WARDWATCH_METRICS_LOOPBACK=true``, a request from a loopback address that no proxy forwarded (no
``X-Forwarded-For`` / ``Forwarded`` header: a reverse proxy on the same host would otherwise make every outside
caller look local). Anyone else gets 404, as if there were no such page. The metrics name no patient, record
or user: route templates, job kinds, outcomes, decisions, queue names and pool counts only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from server.api.admission import DatabaseAdmission
from server.api.deps import SettingsDep
from server.observability.broker import queue_depths
from server.security.credentials import same
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter()


class ProcessCollector(Collector):
    """What only this process knows, read at scrape time: its database pool, its admission gate, the broker."""

    def __init__(self, engine: Engine, admission: DatabaseAdmission, broker_url: str | None) -> None:
        self.engine = engine
        self.admission = admission
        self.broker_url = broker_url

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pool = self.engine.pool
        if hasattr(pool, "checkedout"):
            yield GaugeMetricFamily("wardwatch_db_pool_checked_out", "Pooled connections in use (this process)",
                                    value=pool.checkedout())
            yield GaugeMetricFamily("wardwatch_db_pool_size", "Pooled connections kept (this process)",
                                    value=pool.size())
        yield GaugeMetricFamily("wardwatch_db_admission_in_use", "Requests holding a database slot (this process)",
                                value=self.admission.in_use)
        if self.broker_url is None:
            return
        up = GaugeMetricFamily("wardwatch_broker_up", "1 when the broker answered this scrape")
        depth = GaugeMetricFamily("wardwatch_queue_depth", "Messages waiting per queue", labels=["queue"])
        try:
            for queue, count in queue_depths(self.broker_url).items():
                depth.add_metric([queue], count)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a down broker is a metric, not a failed scrape
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
        yield up
        yield depth


def metrics_allowed(request: Request, settings: Settings) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if settings.metrics_token and scheme.lower() == "bearer" and same(secret.strip(), settings.metrics_token):
        return True
    if not settings.metrics_loopback or request.client is None:
        return False
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def render(process: ProcessCollector) -> bytes:
    """Every process's metrics (summed from PROMETHEUS_MULTIPROC_DIR when set), then this process's gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shared = CollectorRegistry()
        MultiProcessCollector(shared)
    else:
        shared = REGISTRY
    own = CollectorRegistry()
    own.register(process)
    return generate_latest(shared) + generate_latest(own)


async def _collector(request: Request) -> ProcessCollector:
    return request.app.state.metrics_collector


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: SettingsDep,
            collector: Annotated[ProcessCollector, Depends(_collector)]) -> Response:
    if not metrics_allowed(request, settings):
        raise HTTPException(404, detail="Not Found")
    return Response(render(collector), media_type=CONTENT_TYPE_LATEST)
