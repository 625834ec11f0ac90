"""Structured logs: one JSON object per line (``WARDWATCH_LOG_FORMAT=json``) carrying the request ID.

The API's ``RequestIdMiddleware`` puts the request's ID in a context variable; AnyIO copies the context into
the worker threads that run sync routes, the embedded dispatcher copies it into its task threads, and the Celery
dispatcher sends it as a task header that ``server.worker.request_ids`` puts back in the worker. A filter on
the handler copies it onto every record, so a task's log lines name the request that queued it.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

REQUEST_ID: ContextVar[str | None] = ContextVar("wardwatch_request_id", default=None)
TASK_ID: ContextVar[str | None] = ContextVar("wardwatch_task_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``task_id`` (None outside a request or a task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = TASK_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", "task_id", "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
            "task_id": getattr(record, "task_id", None) or TASK_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it was when logging was configured, like ``StreamHandler()``; if that stream
    has since been closed (a test runner's capture that ended), to the process's real stderr instead of failing
    on every later record. Not the *current* ``sys.stderr``: Celery replaces it by a proxy that logs what is
    written to it, which would send every record round in a loop."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "closed", False) and sys.__stderr__ is not None:
            self.stream = sys.__stderr__  # not setStream(): it would flush the closed one
        super().emit(record)


def configure_logging(level: int, fmt: str) -> None:
    """The root logger's Wardwatch handler: JSON lines (``fmt="json"``) or the usual text; both carry the
    context. Calling it again replaces the handler it installed before; handlers others installed stay."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
