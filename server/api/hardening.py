"""HTTP hardening on every response: security headers (a strict Content-Security-Policy first) and request
header limits.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses such as video files pass through untouched. The
headers go on pages, static files, API answers and errors alike, including the 500 of an unhandled exception
(Starlette's ``ServerErrorMiddleware`` sits outside every user middleware, so this one answers it itself).

The pages under ``web/`` load scripts and styles from their own origin only, with no inline ``<script>``,
``style=`` attribute or ``on*=`` handler, so the strict policy needs no ``'unsafe-inline'``. The development-only
API explorers (``/docs``, ``/redoc``) are FastAPI's stock pages, which load Swagger UI / ReDoc from a CDN and
start them with an inline script: they get their own relaxed policy (``DOCS_CSP``), and only while they exist
at all (they are switched off in production, where the strict policy then covers their 404).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'; object-src 'none'")
# FastAPI's /docs (Swagger UI) and /redoc pages: CDN scripts and styles, an inline start-up script, ReDoc's
# web worker from a blob and its Google font. Development only.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """Adds ``Content-Security-Policy`` and the ``HEADERS`` to every HTTP response."""

    def __init__(self, app: ASGIApp, relaxed_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.relaxed_paths = frozenset(relaxed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_CSP if scope["path"] in self.relaxed_paths else CSP
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # the 500 goes out with the headers; ServerErrorMiddleware still logs the error
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send_with_headers)
            raise


class HeaderLimitMiddleware:
    """431 for a request with more than ``max_count`` headers or more than ``max_bytes`` of them.

    ``wardwatch serve`` already has its HTTP parser refuse an oversized header block before it is buffered
    whole (``server.serving``); this check holds the same line under any other ASGI server and bounds the
    header count, which the parser does not.
    """

    def __init__(self, app: ASGIApp, max_count: int, max_bytes: int) -> None:
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or ()
            if len(headers) > self.max_count or sum(len(k) + len(v) + 4 for k, v in headers) > self.max_bytes:
                if scope["type"] == "http":
                    await PlainTextResponse("Request header fields too large", status_code=431)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1009})
                return
        await self.app(scope, receive, send)
