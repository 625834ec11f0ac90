"""HTTP request latency by route template: a pure ASGI middleware (streamed answers pass through untouched).

The route is read from ``scope["route"]`` once routing has matched, so the label is the template
(``/api/v1/events/{event_id}``), never the raw path: no IDs in labels, and a bounded number of series. Paths no
route matched (static files, 404s) share one label each.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.observability.metrics import HTTP_LATENCY

API_PREFIX = "/api/v1"

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        # FastAPI keeps an included router's route path without the prefix it was included under
        if scope.get("path", "").startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
            return API_PREFIX + path
        return path
    return "static" if not scope.get("path", "").startswith("/api/") else "unmatched"


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"  # a client picks it: bounded
            HTTP_LATENCY.labels(method=method, route=route_label(scope),
                                status=str(status)).observe(time.perf_counter() - started)
