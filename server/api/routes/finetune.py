"""Fine-tune jobs (admin): start one; its progress is a job (``GET /jobs/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import DispatcherDep, SessionDep
from server.api.security import ManageModels
from server.db.tables import Job
from server.schemas import FinetuneJobCreate, JobPublic
from server.services.finetune_jobs import create_finetune_job as queue_finetune_job
from server.services.jobs import note_task_id

router = APIRouter(tags=["jobs"])


@router.post("/finetune-jobs", status_code=202, response_model=JobPublic,
             responses={404: {"description": "no such base model version"}})
def create_finetune_job(session: SessionDep, dispatcher: DispatcherDep, access: ManageModels,
                      body: FinetuneJobCreate) -> Job:
    """Queue ATCON fine-tuning of a model version on the reviewed and unlabelled clips (training queue).

    Poll ``GET /jobs/{id}`` for progress; the result is a ``candidate`` model version with its metrics and a
    side-by-side comparison with its base on the same validation clips (and with the active model, when the
    base is an older version). 422 for hyper-parameters or pretrained weights the trainer would refuse.
    """
    job = queue_finetune_job(session=session, request=body, created_by=access.principal.username)
    access.record_now(session, 202)  # in the same transaction as the job
    session.commit()  # the worker reads the row: enqueue only after it is committed
    note_task_id(session=session, job_id=job.id, task_id=dispatcher.finetune(job.id))
    session.refresh(job)
    return job
