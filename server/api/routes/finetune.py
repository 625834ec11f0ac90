"""Fine-tune jobs (admin): start, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select

from model.pretrained import PretrainedWeightsError, check_pretrained
from model.training.config import TrainConfig
from server.api.deps import DispatcherDep, SessionDep
from server.api.params import CursorQuery, IdPath, TextQuery
from server.api.security import ManageModels, ReadJobs
from server.db.tables import Job, JobStatus, ModelVersion
from server.finetuning import FINETUNE_KIND
from server.schemas import FinetuneJobCreate, JobPublic, JobsPublic
from server.services.errors import NotFoundError
from server.services.jobs import cancel_job as cancel
from server.services.jobs import create_job, note_task_id
from server.services.models import get_active_model
from server.services.pagination import id_page

router = APIRouter(tags=["jobs"])


@router.post("/finetune-jobs", status_code=202, response_model=JobPublic,
             responses={404: {"description": "no such base model version"}})
def create_finetune_job(session: SessionDep, dispatcher: DispatcherDep, access: ManageModels,
                        body: FinetuneJobCreate) -> Job:
    """Queue ATCON fine-tuning of a model version on the reviewed and unlabelled clips (training queue).

    Poll ``GET /jobs/{id}`` for progress; the result is a ``candidate`` model version with its metrics and a
    side-by-side comparison with its base on the same validation clips (and with the active model, when the
    base is an older version).
    """
    base = session.get(ModelVersion, body.base_model_id) if body.base_model_id else get_active_model(session=session)
    if base is None:
        raise NotFoundError("model version", body.base_model_id)
    try:
        TrainConfig.from_dict({**body.hyperparameters, "mode": body.mode})
    except (TypeError, ValueError) as exc:
        raise HTTPException(422, detail=f"bad hyperparameters: {exc}") from exc
    if body.pretrained:
        try:  # refused now, not after the job has waited in the queue
            check_pretrained(body.pretrained, arch=base.architecture)
        except PretrainedWeightsError as exc:
            raise HTTPException(422, detail=f"pretrained weights: {exc}") from exc
    params = body.model_dump() | {"base_model_id": base.id}
    job = create_job(session=session, kind=FINETUNE_KIND, params=params, created_by=access.principal.username)
    access.record_now(session, 202)  # in the same transaction as the job
    session.commit()  # the worker reads the row: enqueue only after it is committed
    note_task_id(session=session, job_id=job.id, task_id=dispatcher.finetune(job.id))
    session.refresh(job)
    return job


@router.get("/jobs", response_model=JobsPublic)
def read_jobs(session: SessionDep, _access: ReadJobs, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: CursorQuery = None,
              kind: TextQuery(32) = None, status: JobStatus | None = None) -> JobsPublic:
    """Jobs, newest first."""
    query = select(Job)
    if kind:
        query = query.where(Job.kind == kind)
    if status:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page, next_cursor = id_page(session, query, id_column=Job.id, limit=limit, cursor=cursor)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in page], count=total, next_cursor=next_cursor)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic,
             responses={409: {"description": "not a fine-tune job, or already finished"}})
def cancel_job(session: SessionDep, _access: ManageModels, job_id: IdPath) -> Job:
    """Cancel a queued or running job; a running fine-tune stops between steps and writes no model."""
    return cancel(session=session, job_id=job_id, kinds=(FINETUNE_KIND,))
