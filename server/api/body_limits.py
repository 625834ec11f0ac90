"""Limits on request bodies: an idle timeout (408) and a size limit (413), enforced as the body arrives.

uvicorn times out an idle keep-alive connection but not a request whose body stalls: without the timeout, a
client that sends the headers of a 4 GiB upload and then a byte a minute (or nothing) holds a connection, a
file handle and the partial file for as long as it likes. And FastAPI reads a JSON body whole into memory
before validating it, whatever its size.

So every read of the body through ``receive`` gets ``idle_seconds`` to bring the next chunk, and the body may
not grow past the matched route's ``max_body_size`` (FastAPI's own route option), else ``default_max_bytes``.
A route that streams its body and enforces a limit of its own while doing so (the upload) declares
``max_body_size=STREAMED``. Both refusals are ``HTTPException``s raised from ``receive``: FastAPI's body parsing
and the routes' stream readers pass them on unchanged, the upload code removes its partial file on the way
out, and the app's exception handler answers (408 / 413, ``Connection: close``) and audits the refusal.

Once the body is complete, ``receive`` is only waited on for the disconnect of a streamed answer: no timeout
then (a long video download is not a stalled upload).
"""

from __future__ import annotations

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STREAMED = 2**63 - 1  # route option ``max_body_size``: the route limits its streamed body itself


class BodyStalled(HTTPException):
    """No byte of the request body arrived within the idle timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, detail=f"request body stalled: nothing arrived for {seconds:g} s",
                         headers={"Connection": "close"})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body larger than {limit} bytes", headers={"Connection": "close"})


class BodyLimitsMiddleware:
    def __init__(self, app: ASGIApp, idle_seconds: float, default_max_bytes: int) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.default_max_bytes = default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal body_done, received
            if body_done:
                return await receive()
            limit = getattr(scope.get("route"), "max_body_size", None) or self.default_max_bytes
            with anyio.move_on_after(self.idle_seconds) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise BodyStalled(self.idle_seconds)
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
