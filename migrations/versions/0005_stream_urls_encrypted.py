"""stream URLs encrypted at rest

Stream jobs kept the full URL, camera password and signed query included, in ``job.params.url``. This encrypts
every one with the secret box (Fernet, WARDWATCH_SECRET_KEYS; in development the key file in the data
directory) and adds ``params.source``, the redacted form shown by the API. It also re-redacts what earlier
versions showed and stored in the clear: the recording's ``source`` kept the user name and the query string,
and error messages and warnings quoted the URL the same way.

No schema change: the columns stay, their content changes. Downgrade decrypts the URLs back into
``params.url`` (the key is needed again) and drops ``params.source``; the re-redacted texts stay redacted.

The key: the process running the migration passes its settings' box (``server.db.migrate.upgrade(...,
secret_box=...)``: the server at start-up, ``wardwatch db upgrade``); otherwise the settings are built from the
environment. It is only asked for when a row needs it, so migrating an empty database needs no key.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03 09:12:00.000000
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX = "fernet:"
MASK = "***"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

job = sa.table("job", sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("params", sa.JSON),
               sa.column("error", sa.Text), sa.column("recording_id", sa.Integer))
recording = sa.table("recording", sa.column("id", sa.Integer), sa.column("source", sa.Text),
                     sa.column("error", sa.Text), sa.column("warnings", sa.JSON))


class _Box:
    """The secret box, built on first use."""

    def __init__(self) -> None:
        self._box: Any = None

    def get(self) -> Any:
        if self._box is None:
            factory: Callable[[], Any] | None = context.config.attributes.get("secret_box")
            if factory is None:
                from server.settings import get_settings

                factory = get_settings().secret_box
            self._box = factory()
        return self._box


def _redact(url: str) -> str:
    """Frozen copy of the redaction of this revision (``ingest.stream_urls.redact_url``): ``***@`` for the
    user-info, ``***`` for every query value, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url if "?" not in url and "@" not in url else MASK
    host = f"[{host}]" if ":" in host else host
    netloc = (f"{MASK}@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        key, sep, _value = field.partition("=")
        fields.append(f"{key}={MASK}" if sep and key else MASK)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(fields), ""))


def _redact_text(text: str | None) -> str | None:
    return _URL.sub(lambda match: _redact(match.group(0)), text) if text else text


def upgrade() -> None:
    conn = op.get_bind()
    box = _Box()
    rows = conn.execute(sa.select(job.c.id, job.c.params, job.c.error, job.c.recording_id)
                        .where(job.c.kind == "stream")).all()
    for row in rows:
        params = dict(row.params or {})
        url = params.get("url")
        if isinstance(url, str) and url and not url.startswith(PREFIX):
            params["source"] = _redact(url)
            params["url"] = box.get().encrypt(url)
        conn.execute(sa.update(job).where(job.c.id == row.id).values(params=params, error=_redact_text(row.error)))
        if row.recording_id is None:
            continue
        shown = conn.execute(sa.select(recording.c.source, recording.c.error, recording.c.warnings)
                             .where(recording.c.id == row.recording_id)).first()
        if shown is None:
            continue
        warnings = [_redact_text(w) if isinstance(w, str) else w for w in (shown.warnings or [])]
        conn.execute(sa.update(recording).where(recording.c.id == row.recording_id).values(
            source=_redact(shown.source) if shown.source else shown.source, error=_redact_text(shown.error),
            warnings=warnings))


def downgrade() -> None:
    conn = op.get_bind()
    box = _Box()
    rows = conn.execute(sa.select(job.c.id, job.c.params).where(job.c.kind == "stream")).all()
    for row in rows:
        params = dict(row.params or {})
        url = params.get("url")
        if isinstance(url, str) and url.startswith(PREFIX):
            params["url"] = box.get().decrypt(url)
        params.pop("source", None)
        conn.execute(sa.update(job).where(job.c.id == row.id).values(params=params))
