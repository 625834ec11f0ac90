"""Jobs (scoring now, fine-tuning later) and model versions: read-only views of their state."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from server.api.deps import SessionDep
from server.api.params import IdPath
from server.api.security import ManageModels, ReadJobs, ReadModels
from server.db.tables import Job, ModelVersion
from server.schemas import JobPublic, ModelVersionPublic
from server.services.errors import NotFoundError
from server.services.models import activate_model

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobPublic)
def read_job(session: SessionDep, _access: ReadJobs, job_id: IdPath) -> Job:
    """Status, progress (0..1), result or error of one job."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError("job", job_id)
    return job


@router.post("/models/{model_id}/activate", response_model=ModelVersionPublic)
def post_activate(session: SessionDep, _access: ManageModels, model_id: IdPath) -> ModelVersion:
    """Promote a model version (or roll back to an earlier one); new scoring tasks use it at once."""
    return activate_model(session=session, model_id=model_id)


@router.get("/models", response_model=list[ModelVersionPublic])
def read_models(session: SessionDep, _access: ReadModels) -> list[ModelVersion]:
    """Model versions, newest first; exactly one is ``active``."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))
