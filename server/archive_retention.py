"""Retention of live streams' archives: each stream's age and size limits, keeping what its events need
(:mod:`server.services.stream_archive` says which seconds those are; :mod:`ingest.archive_retention` removes).

A live reader prunes its own archive after each segment it closes (it also knows the events still open); the
housekeeper prunes the archives no reader holds, at start-up and every ``WARDWATCH_PURGE_INTERVAL_MINUTES``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ingest.archive_retention import Removal, RetentionPolicy, apply_retention
from ingest.archive_writer import ArchiveBusy, StreamArchiveWriter
from server.db.session import session_scope
from server.services.stream_archive import held_spans, live_stream_recordings
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["prune_archive", "prune_stopped_archives", "retention_policy"]


def retention_policy(settings: Settings) -> RetentionPolicy:
    """``stream_archive_max_hours`` / ``_max_bytes``; 0 is no limit of that kind."""
    hours, size = settings.stream_archive_max_hours, settings.stream_archive_max_bytes
    return RetentionPolicy(max_age=timedelta(hours=hours) if hours else None, max_bytes=size or None)


def prune_archive(settings: Settings, factory: sessionmaker[Session], recording_id: int, *,
                  hold_from: float | None = None, also_held: Sequence[tuple[float, float]] = ()) -> Removal:
    """Apply retention to one stream's archive, keeping what its events need (and ``also_held``, and everything
    after ``hold_from``: the events its live reader has not closed yet)."""
    with session_scope(factory) as session:
        held = held_spans(session=session, recording_id=recording_id, pre=settings.review_clip_pre_seconds,
                          post=settings.review_clip_post_seconds)
    return apply_retention(settings.stream_archive_dir(recording_id), retention_policy(settings),
                           held=[*held, *also_held], hold_from=hold_from)


def _recover(folder: Path) -> None:
    """Close the segment a reader left open when it died and no reader followed (its job failed): taking the
    writer lock proves no writer is alive, and opening a writer recovers (then it is closed at once)."""
    try:
        StreamArchiveWriter(folder, name=f"archive {folder.parent.name}").close()
    except ArchiveBusy:
        pass  # a reader is writing it after all: it recovered the archive itself


def prune_stopped_archives(settings: Settings, factory: sessionmaker[Session]) -> int:
    """Retention for every archived stream without a live reader (a reader prunes its own), after closing what a
    reader that died left open; returns the segments removed."""
    root = settings.media_dir / "recordings"
    archived = {int(p.parent.name): p for p in root.glob("*/archive") if p.parent.name.isdigit()} \
        if root.is_dir() else {}
    if not archived:
        return 0
    with session_scope(factory) as session:
        live = live_stream_recordings(session=session, recording_ids=archived)
    removed = 0
    for recording_id in sorted(set(archived) - live):
        try:
            _recover(archived[recording_id])
            removed += len(prune_archive(settings, factory, recording_id).removed)
        except Exception:  # noqa: BLE001 - one damaged archive must not stop the others being pruned
            log.exception("retention of the archive of recording %s failed", recording_id)
    return removed
