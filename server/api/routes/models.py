"""Model versions: the list, and promoting (or rolling back to) one of them."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import SessionDep
from server.api.params import IdPath
from server.api.security import ManageModels, ReadModels
from server.db.tables import ModelVersion
from server.schemas import ModelVersionPublic
from server.services.models import activate_model, list_models

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelVersionPublic])
def read_models(session: SessionDep, _access: ReadModels) -> list[ModelVersion]:
    """Model versions, newest first; exactly one is ``active``."""
    return list_models(session=session)


@router.post("/models/{model_id}/activate", response_model=ModelVersionPublic)
def post_activate(session: SessionDep, _access: ManageModels, model_id: IdPath) -> ModelVersion:
    """Promote a model version (or roll back to an earlier one); new scoring tasks use it at once."""
    return activate_model(session=session, model_id=model_id)
