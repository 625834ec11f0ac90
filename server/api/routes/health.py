"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import text

from server import __version__
from server.api.deps import SessionDep, SettingsDep
from server.api.security import Public
from server.schemas import Health
from server.services.models import get_active_model

router = APIRouter(tags=["health"], dependencies=[Public])  # probes carry no credentials


@router.get("/health", response_model=Health)
def health(settings: SettingsDep) -> Health:
    """Liveness: the process answers."""
    return Health(status="ok", version=__version__, mode="embedded" if settings.embedded else "broker")


@router.get("/ready", responses={503: {"description": "the database does not answer, or no model is active"}})
def ready(session: SessionDep) -> dict[str, object]:
    """Readiness: the database answers and a model version is active."""
    session.execute(text("SELECT 1"))
    version = get_active_model(session=session)
    if version is None:
        raise HTTPException(503, detail="no active model version")
    return {"status": "ready", "database": "ok", "model": {"id": version.id, "name": version.name}}
