"""Admission to the database: how many requests of this process use it at once, and the 503 when it is full.

Why (issue 12): a request takes its pooled connection in one worker-thread hop (the Guard authenticates with the
request's session) and gives it back only after another (the route body), and sync routes share AnyIO's 40
worker threads. With 15 pooled connections, 50 clients filled the 40 threads with requests blocked in
``pool.connect()`` while the 15 requests holding connections waited for a thread to run their route: nothing
moved until the 30 s pool timeout, which surfaced as unhandled ``QueuePool limit ... timed out`` ASGI errors,
and requests whose clients had given up kept the backlog full into the next run.

So a request waits for a database slot *before* its first hop, on the event loop, holding no thread and no
connection: at most ``slots`` requests hold or want a connection, ``slots`` is at most the pool size and the
thread count (``Settings.api_threads``), so none of them ever blocks a thread in the pool. A request that
gets no slot within ``Settings.db_pool_timeout_seconds`` is answered 503 with ``Retry-After``, and so is one
whose connection checkout times out anyway (a pool shared with background threads, or configured smaller).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

RETRY_AFTER_SECONDS = 1


class ServerBusy(Exception):
    """No database connection could be had in time: the client should retry shortly."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class DatabaseAdmission:
    """A gate of ``slots`` requests in front of the database pool."""

    def __init__(self, slots: int, timeout: float) -> None:
        self.slots = slots
        self.timeout = timeout
        self._limiter: anyio.CapacityLimiter | None = None  # made on the serving event loop

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        return self._limiter

    @property
    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens) if self._limiter is not None else 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; ServerBusy when none frees up within the timeout."""
        limiter = self.limiter
        with anyio.move_on_after(self.timeout) as waited:
            await limiter.acquire()
        if waited.cancelled_caught:
            raise ServerBusy(f"the server is busy: no database connection free within {self.timeout:g} s; "
                             f"retry in {RETRY_AFTER_SECONDS} s")
        try:
            yield
        finally:
            limiter.release()


def set_thread_pool_size(threads: int) -> None:
    """AnyIO's worker threads for sync routes and dependencies, on the running event loop."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


def busy_response(detail: str) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": detail},
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def server_busy(_request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After for ``ServerBusy`` and for SQLAlchemy's pool ``TimeoutError``."""
    if isinstance(exc, ServerBusy):
        return busy_response(exc.detail)
    return busy_response(f"the server is busy: no database connection free; retry in {RETRY_AFTER_SECONDS} s")
