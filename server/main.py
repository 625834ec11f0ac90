"""``create_app(settings)``: the FastAPI application with the REST API under /api/v1 and the web UI at /."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select

from server import __version__
from server.api.routes import events, finetune, health, jobs, recordings
from server.bootstrap import ensure_active_model, open_database
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, Recording, RecordingStatus
from server.finetuning import FINETUNE_KIND
from server.model_cache import ModelCache
from server.pipeline import WorkerContext
from server.services.errors import ConflictError, NotFoundError
from server.settings import Settings, get_settings
from server.watcher import FolderWatcher
from server.worker.dispatch import Dispatcher, make_dispatcher

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; shared objects live on ``app.state`` and reach routes through ``server.api.deps``."""
    settings = settings or get_settings()
    engine, factory = open_database(settings)
    ensure_active_model(settings, factory)
    context = WorkerContext(settings=settings, session_factory=factory, models=ModelCache(settings.device))
    dispatcher = make_dispatcher(settings, context)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.embedded:
            _resume_in_flight(context, dispatcher)
        watcher = FolderWatcher(settings, factory, dispatcher) if settings.watch_dir else None
        if watcher is not None:
            watcher.start()
        app.state.watcher = watcher
        yield
        if watcher is not None:
            watcher.stop()
        dispatcher.shutdown()
        engine.dispose()

    app = FastAPI(
        title="Wardwatch",
        version=__version__,
        description="Explainable video event detection for clinical review.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.dispatcher = dispatcher
    app.state.worker_context = context

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    for module in (health, recordings, events, jobs, finetune):
        app.include_router(module.router, prefix=API_PREFIX)
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app


def _resume_in_flight(context: WorkerContext, dispatcher: Dispatcher) -> None:
    """Embedded mode: re-queue recordings that were queued or half-scored when the server stopped."""
    with session_scope(context.session_factory) as session:
        stuck = session.scalars(
            select(Recording).where(Recording.status.in_([RecordingStatus.queued, RecordingStatus.ingesting]))
        ).all()
        resumed = []
        for recording in stuck:
            job = Job(kind="score", recording_id=recording.id, params={"resumed": True}, status=JobStatus.queued)
            session.add(job)
            session.flush()
            resumed.append((recording.id, job.id))
        training = session.scalars(
            select(Job).where(Job.kind == FINETUNE_KIND, Job.status.in_([JobStatus.queued, JobStatus.running]))
        ).all()
        for job in training:
            job.status = JobStatus.queued  # the trainer resumes from its last epoch state in data_dir/jobs/<id>
        training_ids = [job.id for job in training]
    for recording_id, job_id in resumed:
        log.info("resuming recording %s", recording_id)
        dispatcher.process_recording(recording_id, job_id)
    for job_id in training_ids:
        log.info("resuming fine-tune job %s", job_id)
        dispatcher.finetune(job_id)
