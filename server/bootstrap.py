"""Start-up shared by the API and the worker: database engine, schema, the active model, a worker context."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from model.weights import load_checkpoint
from server.db import migrate
from server.db.session import make_engine, make_session_factory, session_scope
from server.model_cache import ModelCache
from server.pipeline import WorkerContext
from server.services.models import get_active_model, register_checkpoint
from server.settings import Settings

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    """This process's engine; embedded mode (or WARDWATCH_AUTO_MIGRATE) brings the schema to head first."""
    settings.ensure_dirs()
    if settings.auto_migrate:
        migrate.upgrade(settings.sqlalchemy_url, secret_box=settings.secret_box)
    engine = make_engine(settings.sqlalchemy_url, pool_size=settings.pool_size, max_overflow=settings.db_pool_overflow,
                         pool_timeout=settings.db_pool_timeout_seconds)
    return engine, make_session_factory(engine)


def ensure_active_model(settings: Settings, factory: sessionmaker[Session]) -> None:
    """With no active model version yet, register the configured checkpoint and activate it.

    API and worker processes may start together: if another process registered the same checkpoint first, the
    unique sha256 makes our insert fail and the retry finds theirs.
    """
    for attempt in range(2):
        try:
            with session_scope(factory) as session:
                if get_active_model(session=session) is not None:
                    return
                loaded = load_checkpoint(settings.model_path, device="cpu")
                version = register_checkpoint(session=session, loaded=loaded, activate=True,
                                              created_by="bootstrap")
                log.info("activated model version %s (%s)", version.id, settings.model_path)
                return
        except IntegrityError:
            if attempt:
                raise


def make_worker_context(settings: Settings) -> WorkerContext:
    """Everything a task needs, built once per process."""
    _engine, factory = open_database(settings)
    ensure_active_model(settings, factory)
    return WorkerContext(settings=settings, session_factory=factory, models=ModelCache(device=settings.device))
