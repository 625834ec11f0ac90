"""Typed dependency aliases: routes reach shared objects only through these (STYLE.md #1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

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


def _session(request: Request, _slot: Annotated[None, Depends(_database_slot, scope="function")]
             ) -> Iterator[Session]:
    """One unit of work per request, committed when the route returns.

    Used with ``scope="function"`` (below): the commit runs *before* the response is sent, so a
    client that reads right after a write (an admin activating a model, a clinician's review)
    never sees the old state, and a failed commit becomes an error response instead of a 200
    for a change that was lost.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


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
