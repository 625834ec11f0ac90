"""The uvicorn configuration every ``wardwatch`` server uses (``serve``, ``demo``, and the tests' real servers).

The h11 parser is chosen on purpose: a request line plus headers still incomplete past
``settings.max_header_bytes`` is refused while it arrives (400, connection closed), so a 1 MiB header is never
buffered whole; httptools has no such limit. ``HeaderLimitMiddleware`` then refuses, with 431, a complete header
block over the same byte limit or with more than ``settings.max_header_count`` headers.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from server.settings import Settings


def uvicorn_config(app: Any, settings: Settings, host: str, port: int, log_level: str = "info",
                   **options: Any) -> uvicorn.Config:
    """``options`` go to uvicorn as they are (``factory=True, workers=N`` for several processes). With JSON logs
    uvicorn's own loggers get no handlers of theirs and reach the root logger's JSON handler."""
    if settings.log_format == "json":
        options.setdefault("log_config", None)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http="h11",
                          h11_max_incomplete_event_size=settings.max_header_bytes, **options)
