"""Typed dependency aliases: routes reach shared objects only through these (STYLE.md #1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from server.api.admission import DatabaseAdmission
from server.services.token_cache import TokenCache
from server.settings import Settings
from server.worker.dispatch import Dispatcher


# Dependencies that only read ``app.state`` are ``async``: FastAPI runs a sync one in a worker thread, and
# each such hop costs a thread hand-over (and GIL contention among 40 threads) on every request.
async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _database_slot(request: Request) -> AsyncIterator[None]:
    """Wait on the event loop (no thread, no connection held) for one of the process's database slots, kept
    until the request's session has closed: see ``server.api.admission`` for why."""
    admission: DatabaseAdmission = request.app.state.db_admission
    async with admission.slot():
        yield


#: ``session.info`` key: callables run in the request's transaction just before it commits, after the route
#: returned (the Guard's audit entry: it commits with the action or not at all)
BEFORE_COMMIT = "wardwatch.before_commit"


async def _session(request: Request, _slot: Annotated[None, Depends(_database_slot, scope="function")]
                   ) -> AsyncIterator[Session]:
    """One unit of work per request, committed when the route returns.

    Used with ``scope="function"`` (below): the commit runs *before* the response is sent, so a
    client that reads right after a write (an admin activating a model, a clinician's review)
    never sees the old state, and a failed commit becomes an error response instead of a 200
    for a change that was lost.

    Made on the event loop (a session takes its connection only when first used, in a worker thread) and
    finished in one worker-thread hop (the ``BEFORE_COMMIT`` work, the commit, the close): a sync generator
    dependency costs a hop to enter and another to leave, and every hop is a thread hand-over under the GIL
    (issue 12). The finish is shielded from cancellation and needs no free worker thread, as FastAPI's own
    exits of sync dependencies: a session is never left holding its connection.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
    except BaseException:
        await _in_worker(_abandon, session)
        raise
    await _in_worker(_finish, session)


def _finish(session: Session) -> None:
    try:
        for work in session.info.pop(BEFORE_COMMIT, ()):
            work(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _abandon(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def _in_worker(function: Callable[[Session], None], session: Session) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(function, session, limiter=anyio.CapacityLimiter(1))


async def _session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


async def _dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


async def _token_cache(request: Request) -> TokenCache:
    return request.app.state.token_cache


#: a route that opens sessions itself (readiness) still waits for a database slot: ``Depends(DatabaseSlot)``
DatabaseSlot = _database_slot
SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_session_factory)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
TokenCacheDep = Annotated[TokenCache, Depends(_token_cache)]
