"""``create_app(settings)``: the FastAPI application with the REST API under /api/v1 and the web UI at /."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from server import __version__
from server.api import error_docs
from server.api.admission import DatabaseAdmission, ServerBusy, busy_response, server_busy, set_thread_pool_size
from server.api.auditing import API_PREFIX, record_refusal
from server.api.body_limits import BodyLimitsMiddleware
from server.api.hardening import HeaderLimitMiddleware, SecurityHeadersMiddleware
from server.api.request_id import RequestIdMiddleware
from server.api.routes import (
    audit,
    events,
    fhir,
    finetune,
    health,
    jobs,
    models,
    recordings,
    session,
    users,
    webhooks,
)
from server.api.security import unguarded_routes
from server.bootstrap import ensure_active_model, open_database
from server.housekeeper import Housekeeper
from server.job_sweeper import JobSweeper
from server.model_cache import ModelCache
from server.observability import exposition
from server.observability.http_metrics import HttpMetricsMiddleware
from server.pipeline import WorkerContext
from server.services.errors import ConflictError, InvalidInputError, NotFoundError
from server.services.token_cache import TokenCache
from server.services.upload_staging import clean_dead_uploads
from server.services.webhook_outbox import send_after_commit
from server.settings import Settings, get_settings
from server.watcher import FolderWatcher
from server.webhook_sweeper import WebhookSweeper
from server.worker.dispatch import make_dispatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; shared objects live on ``app.state`` and reach routes through ``server.api.deps``."""
    settings = settings or get_settings()
    settings.secret_box()  # production without WARDWATCH_SECRET_KEYS stops here, before anything is served
    engine, factory = open_database(settings)
    ensure_active_model(settings, factory)
    context = WorkerContext(settings=settings, session_factory=factory, models=ModelCache(settings.device))
    dispatcher = make_dispatcher(settings, context)
    send_after_commit(factory, dispatcher.deliver_webhook)  # webhook deliveries go out once their event commits

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        set_thread_pool_size(settings.api_threads)
        clean_dead_uploads(settings, factory)  # what uploads of a killed process left half-way
        # Jobs of dead workers: re-queued and handed on (embedded: with everything that was waiting), before
        # serving; then every job_sweep_seconds, expired leases (see server/job_sweeper.py).
        job_sweeper = JobSweeper(settings, factory, dispatcher)
        job_sweeper.recover_at_startup()
        job_sweeper.start()
        watcher = FolderWatcher(settings, factory, dispatcher) if settings.watch_dir else None
        if watcher is not None:
            watcher.start()
        app.state.watcher = watcher
        housekeeper = Housekeeper(settings, factory)  # ended sessions, old sign-in tries: at start-up, then hourly
        housekeeper.start()
        sweeper = WebhookSweeper(settings, factory, dispatcher)
        sweeper.start()
        yield
        job_sweeper.stop()
        sweeper.stop()
        housekeeper.stop()
        if watcher is not None:
            watcher.stop()
        dispatcher.shutdown()
        engine.dispose()

    app = FastAPI(
        title="Wardwatch",
        version=__version__,
        description="Explainable video event detection for clinical review.",
        lifespan=lifespan,
        # The schema lists every route and parameter to anyone who asks: served in development only.
        **({"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.production else {}),
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.dispatcher = dispatcher
    app.state.worker_context = context
    app.state.token_cache = TokenCache()  # token look-ups, dropped when a credential changes (issue 12)
    # never more requests on the database than connections in the pool or threads to run them
    admission = DatabaseAdmission(min(settings.api_threads, settings.pool_size), settings.db_pool_timeout_seconds)
    app.state.db_admission = admission
    app.state.metrics_collector = exposition.ProcessCollector(engine, admission, settings.broker_url)

    app.add_middleware(BodyLimitsMiddleware, idle_seconds=settings.body_idle_timeout_seconds,
                       default_max_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # Outermost last: headers go on every answer, including the 400 for an untrusted Host (DNS rebinding) and
    # the 431 for too many or too large request headers.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts, www_redirect=False)
    app.add_middleware(HeaderLimitMiddleware, max_count=settings.max_header_count, max_bytes=settings.max_header_bytes)
    app.add_middleware(SecurityHeadersMiddleware,
                       relaxed_paths=[path for path in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
                                      if path])

    async def refused(request: Request, status: int, detail: str) -> Response | None:
        """Audit a refusal on a guarded route; if the trail cannot be written, the answer is 503."""
        try:
            async with admission.slot():  # the request's own slot is already given back
                await run_in_threadpool(record_refusal, request, factory, status, detail)
        except ServerBusy as busy:
            return busy_response(busy.detail)
        except Exception:  # noqa: BLE001 - any database failure: no unaudited answer goes out
            log.exception("could not write the audit entry for a refused request")
            return JSONResponse(status_code=503, content={"detail": "audit trail unavailable; try again later"})
        return None

    app.add_exception_handler(ServerBusy, server_busy)
    app.add_exception_handler(PoolTimeout, server_busy)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if 400 <= exc.status_code < 500 and (failed := await refused(request, exc.status_code, str(exc.detail))):
            return failed
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        """422 without echoing the offending input back: it may be a password or a token."""
        errors = [{key: value for key, value in error.items() if key != "input"} for error in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": _encodable(jsonable_encoder(errors))})

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return await refused(request, 404, str(exc)) or JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        return await refused(request, 409, str(exc)) or JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(InvalidInputError)
    async def _unacceptable(request: Request, exc: InvalidInputError) -> Response:
        return await refused(request, 422, str(exc)) or JSONResponse(status_code=422, content={"detail": str(exc)})

    for module in (health, session, recordings, events, jobs, models, finetune, audit, users, fhir, webhooks):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(exposition.router)  # /metrics: its own access rule (metrics_allowed), no patient data
    if missing := unguarded_routes(app.routes):
        raise RuntimeError(f"API routes without a Guard or Public dependency: {missing}")
    error_docs.install(app)
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app


def served_app(settings: Settings | None = None) -> FastAPI:
    """``create_app`` for a process that serves it (``wardwatch serve``, each of ``--workers N``, the demo).

    What start-up made (PyTorch, FastAPI, SQLAlchemy, the app: about 500,000 objects) lives as long as the
    process, yet every full collection of the cyclic garbage collector walked all of it: 0.25 s with the GIL
    held, every request of the process waiting. Under the load benchmark that was the p99 tail. Frozen (moved
    to the permanent generation, never scanned), a full collection takes microseconds; what requests allocate
    is still collected. Not in ``create_app`` itself: a test process builds hundreds of apps, and frozen
    cycles of apps it dropped would never be freed."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def _encodable(value: object) -> object:
    """``value`` with lone surrogates replaced: a dict key from the client (``{"\\ud800": 1}``) named in a
    validation error would otherwise fail the UTF-8 encoding of the answer, turning a 422 into a 500."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    return value
