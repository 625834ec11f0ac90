"""Jobs of every kind (scoring, segments, live streams, fine-tuning): their state, the list, cancelling."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import SessionDep
from server.api.params import CursorQuery, IdPath, TextQuery
from server.api.security import ManageModels, ReadJobs
from server.db.tables import Job, JobStatus
from server.schemas import JobPublic, JobsPublic
from server.services.jobs import JobKind, get_job, list_jobs
from server.services.jobs import cancel_job as cancel

router = APIRouter(tags=["jobs"])
# Route function names are the audit trail's action names (server.api.auditing, server.fhir.audit_event).


@router.get("/jobs/{job_id}", response_model=JobPublic)
def read_job(session: SessionDep, _access: ReadJobs, job_id: IdPath) -> Job:
    """Status, progress (0..1), result or error of one job."""
    return get_job(session=session, job_id=job_id)


@router.get("/jobs", response_model=JobsPublic)
def read_jobs(session: SessionDep, _access: ReadJobs, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: CursorQuery = None,
              kind: TextQuery(32) = None, status: JobStatus | None = None) -> JobsPublic:
    """Jobs, newest first."""
    page, total, next_cursor = list_jobs(session=session, kind=kind, status=status, limit=limit, cursor=cursor)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in page], count=total, next_cursor=next_cursor)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic,
             responses={409: {"description": "not a fine-tune job, or already finished"}})
def cancel_job(session: SessionDep, _access: ManageModels, job_id: IdPath) -> Job:
    """Cancel a queued or running job; a running fine-tune stops between steps and writes no model."""
    return cancel(session=session, job_id=job_id, kinds=(JobKind.finetune,))
