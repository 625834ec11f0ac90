"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server import __version__
from server.api.deps import DatabaseSlot, SessionFactoryDep, SettingsDep
from server.api.security import Public
from server.observability.broker import ping_broker
from server.schemas import Health
from server.services.models import get_active_model

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"], dependencies=[Public])  # probes carry no credentials


@router.get("/health", response_model=Health)
def health(settings: SettingsDep) -> Health:
    """Liveness: the process answers."""
    return Health(status="ok", version=__version__, mode="embedded" if settings.embedded else "broker")


@router.get("/ready", responses={503: {"description": "the database, the broker or the active model is missing; "
                                                     "``checks`` says which"}})
def ready(factory: SessionFactoryDep, settings: SettingsDep,
          _slot: Annotated[None, Depends(DatabaseSlot, scope="function")]) -> JSONResponse:
    """Readiness: the database answers, the broker answers (when one is configured) and a model version is
    active. 503 names the part that failed in ``checks`` (``ok`` or what went wrong, never a secret)."""
    checks: dict[str, object] = {}
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            version = get_active_model(session=session)
            checks["model"] = {"id": version.id, "name": version.name} if version else "no active model version"
    except SQLAlchemyError as exc:
        log.warning("readiness: database unavailable: %s", type(exc).__name__)
        checks["database"] = f"unavailable ({type(exc).__name__})"
        checks["model"] = "unknown (no database)"
    if settings.broker_url:
        try:
            ping_broker(settings.broker_url)
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker is "not ready"
            log.warning("readiness: broker unavailable: %s", type(exc).__name__)
            checks["broker"] = f"unavailable ({type(exc).__name__})"
    failed = [name for name, value in checks.items() if not (value == "ok" or isinstance(value, dict))]
    if failed:
        return JSONResponse(status_code=503, content={"detail": f"not ready: {', '.join(failed)}", "status": "unready",
                                                      "checks": checks})
    return JSONResponse({"status": "ready", **checks})
