"""A request ID for every HTTP request: generated here, stored on ``request.state.request_id`` for the audit
trail and logs, and returned as ``X-Request-ID`` so a hospital's support desk can quote it.

Always generated server-side, never taken from the client, so an audit entry's request ID cannot be forged.
Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses such as video files pass through untouched.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.observability.logs import REQUEST_ID

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        token = REQUEST_ID.set(request_id)  # log lines and queued tasks carry it (server.observability.logs)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
