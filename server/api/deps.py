"""Typed dependency aliases: routes reach shared objects only through these (STYLE.md #1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from server.settings import Settings
from server.worker.dispatch import Dispatcher


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _session(request: Request) -> Iterator[Session]:
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


def _session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def _dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_session_factory)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
