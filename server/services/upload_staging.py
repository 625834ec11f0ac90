"""Where an upload waits until its recording is committed, and the clean-up of uploads whose process died.

An upload streams into ``incoming/<owner>/`` (``owner`` = ``host:pid:run`` of the receiving process, the form of a
job's lease owner); once checked, the file moves to ``recordings/<id>/`` inside the transaction that creates the
recording. A process killed part-way (``kill -9``, OOM, a power cut) leaves one of two things behind:

* a staging directory with a partial file -- the upload was still arriving or being checked; or
* a file already moved to ``recordings/<id>/`` whose recording was never committed.

For the second, the process writes a claim (the recording id and the file's path) into its staging directory
just before the move. At start-up :func:`clean_dead_uploads` removes the staging directories of this host's
dead processes and, for a claim whose recording does not exist, the moved file: nothing half-registered stays.
Live uploads of other processes (``serve --workers N``, other hosts sharing the data volume) are never touched;
another host's directory goes once nothing has written to it for a day (a container recreated under a new host
name never comes back for it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Recording
from server.services.jobs import new_owner, owner_is_dead_here
from server.settings import Settings

log = logging.getLogger(__name__)

INCOMING = "incoming"
CLAIM = ".claim.json"
#: a staging directory nothing has written to for this long is removed whoever made it
STALE_SECONDS = 24 * 3600


def new_staging_dir(settings: Settings) -> Path:
    """A fresh staging directory name for one upload (not created yet), owned by this process."""
    return settings.data_dir / INCOMING / new_owner()


def _is_staging_dir(path: Path) -> bool:
    return path.parent.name == INCOMING and path.name.count(":") >= 2


def claim(staging: Path, *, recording_id: int, relative_path: str) -> None:
    """Note, before a staged file moves to ``relative_path``, which recording it becomes (a no-op for a file that
    is not in a staging directory: imports and watched files never move)."""
    if _is_staging_dir(staging):
        (staging / CLAIM).write_text(json.dumps({"recording_id": recording_id, "path": relative_path}))


def clean_dead_uploads(settings: Settings, factory: sessionmaker[Session]) -> int:
    """Remove what uploads of dead processes on this host left (see the module docstring); returns how many
    staging directories went. Called at start-up, before serving."""
    incoming = settings.data_dir / INCOMING
    if not incoming.is_dir():
        return 0
    removed = 0
    for staging in sorted(incoming.iterdir()):
        if not staging.is_dir() or not _abandoned(staging):
            continue
        _undo_claim(settings, factory, staging)
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    if removed:
        log.warning("removed %d upload(s) left unfinished by a process that died", removed)
    return removed


def _abandoned(staging: Path) -> bool:
    """A staging directory of a dead process of this host; or one nothing has written to for a day, whoever made
    it (another host's, e.g. a container recreated under a new host name; or of the format before owners were
    named): an upload still arriving writes to it all the time."""
    if _is_staging_dir(staging) and owner_is_dead_here(staging.name):
        return True
    return _idle_seconds(staging) > STALE_SECONDS


def _idle_seconds(staging: Path) -> float:
    newest = staging.stat().st_mtime
    for entry in staging.iterdir():
        with contextlib.suppress(OSError):
            newest = max(newest, entry.stat().st_mtime)
    return time.time() - newest


def _undo_claim(settings: Settings, factory: sessionmaker[Session], staging: Path) -> None:
    """A file moved into the recordings folder by a transaction that never committed: removed."""
    try:
        noted = json.loads((staging / CLAIM).read_text())
        recording_id, relative = int(noted["recording_id"]), str(noted["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no claim (the upload had not got that far) or an unreadable one: nothing was moved
    target = (settings.data_dir / relative).resolve()
    if not target.is_relative_to(settings.recordings_dir.resolve()):
        return  # never delete outside the recordings folder, whatever the claim says
    with session_scope(factory) as session:
        committed = session.scalar(select(exists().where(Recording.id == recording_id, Recording.path == relative)))
    if committed:
        return
    target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.parent.rmdir()  # recordings/<id>/, now empty
    log.warning("removed %s: its recording %d was never committed", relative, recording_id)
