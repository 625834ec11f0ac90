"""JSON answers a route builds itself: gzip for the few large ones (the per-frame maps: base64 of heat maps
shrinks about threefold), and pages validated once (the review queue).

Per route rather than app-wide middleware: a middleware would also compress the range answers of the review
clips, whose Content-Range counts bytes of the file, not of a compressed body.
"""

from __future__ import annotations

import gzip

from fastapi import Request, Response
from pydantic import BaseModel

#: below this, compressing costs more than it saves
MIN_GZIP_BYTES = 1024


def json_answer(request: Request, body: BaseModel) -> Response:
    """``body`` as JSON, gzip-encoded when the client accepts it and the body is worth it."""
    data = body.model_dump_json().encode()
    headers = {"Vary": "Accept-Encoding"}
    if len(data) >= MIN_GZIP_BYTES and _accepts_gzip(request.headers.get("accept-encoding", "")):
        data = gzip.compress(data, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return Response(content=data, media_type="application/json", headers=headers)


def json_response(body: BaseModel) -> Response:
    """``body`` as JSON, as it is: for a route that built and validated its answer itself, so FastAPI does not
    validate it again (in another worker-thread hop, for a sync route) before serialising it."""
    return Response(content=body.model_dump_json(), media_type="application/json")


def _accepts_gzip(header: str) -> bool:
    """``gzip`` (or ``*``) listed without ``q=0`` (RFC 9110 12.5.3)."""
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() not in ("gzip", "*"):
            continue
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False
