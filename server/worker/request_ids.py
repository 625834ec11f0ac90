"""The request ID from the API into Celery tasks and their logs: sent as a task header, put back in the worker's
logging context (``server.observability.logs``) for the task's duration, with the task's own ID beside it.

The header is our own (``wardwatch_request_id``), not Celery's: a client cannot set it, since only the API's
dispatcher and a worker re-queueing follow-up work send tasks.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun

from server.observability.logs import REQUEST_ID, TASK_ID

HEADER = "wardwatch_request_id"


def task_headers() -> dict[str, str]:
    """Headers for a task sent now: the current request's ID, if any."""
    request_id = REQUEST_ID.get()
    return {HEADER: request_id} if request_id else {}


def request_id_of(task: Any) -> str | None:
    """The request ID a task was sent with (protocol 2 puts custom headers on the request; older ones nest them)."""
    request = task.request
    value = getattr(request, HEADER, None) or (getattr(request, "headers", None) or {}).get(HEADER)
    return str(value) if value else None


@task_prerun.connect
def _enter_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    REQUEST_ID.set(request_id_of(task) if task is not None else None)
    TASK_ID.set(task_id)


@task_postrun.connect
def _leave_task(**_: Any) -> None:
    REQUEST_ID.set(None)
    TASK_ID.set(None)
