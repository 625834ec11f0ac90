"""A live stream's archive on the server: the writer its reader feeds, the review clips of its events cut from it,
the frames of events a dead reader took with it, and retention (docs/streams.md, "The archive").

The files and their index are :mod:`ingest.archive`'s; which events still need which seconds is
:mod:`server.services.stream_archive`'s. This module joins them for one stream: a :class:`StreamArchive` lives as
long as a reader. Review clips are cut by a thread of its own, once the segments holding an event's window are
closed: a cut decodes and encodes seconds of video, and the reader must keep taking packets off the network
meanwhile. Retention (:mod:`server.archive_retention`) runs on that thread too, after each closed segment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from ingest.archive import ArchiveSpec, Segment, read_index, reason
from ingest.archive_reader import read_archive_frames
from ingest.archive_writer import StreamArchiveWriter
from ingest.errors import ArchiveError
from ingest.export import export_archive_clip
from ingest.report import IngestReport
from server.archive_retention import prune_archive
from server.db.session import session_scope
from server.media import MAX_OVERLAY_SIDE
from server.services.stream_archive import attach_clip, events_awaiting_clip, note_media_error
from server.settings import Settings

log = logging.getLogger(__name__)
#: a live reader applies retention at most this often (and once more when the stream ends): a pass reads the index
RETENTION_EVERY_SECONDS = 60.0
#: the longest a new reader waits for the writer lock of a reader that lost its job but has not noticed yet
_LOCK_WAIT_MAX_SECONDS = 60.0

__all__ = ["StreamArchive", "archive_spec"]


def archive_spec(settings: Settings) -> ArchiveSpec:
    return ArchiveSpec(segment_seconds=settings.stream_archive_segment_seconds)


class StreamArchive:
    """One reader's archive of its stream: the writer (``writer``, given to ``iter_stream_clips``), and the review
    clips of its events, cut on a thread of their own as the segments holding them close.

    Life: :meth:`open` (None when archiving is off or another reader still holds the archive), :meth:`add` each
    stored event, set :attr:`hold_from` as events open and close, then :meth:`finish` when the stream ended (the
    last segment is closed, every clip cut, retention run) or :meth:`abandon` when the job went to another reader
    (which will cut what is left).
    """

    def __init__(self, settings: Settings, factory: sessionmaker[Session], recording_id: int) -> None:
        self.settings, self.factory, self.recording_id = settings, factory, recording_id
        self.directory = settings.stream_archive_dir(recording_id)
        self.writer: StreamArchiveWriter | None = None
        #: recording seconds from which everything is kept: the start of the earliest event still open
        self.hold_from: float | None = 0.0
        self._pending: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._final = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"wardwatch-archive-{recording_id}")

    @classmethod
    def open(cls, settings: Settings, factory: sessionmaker[Session], recording_id: int, *, report: IngestReport,
             name: str) -> StreamArchive | None:
        """Start archiving (continuing what an earlier reader left; its open segment is recovered first) and queue
        the clips that reader did not cut. None, with the reason in ``report``, when the stream is not archived."""
        if not settings.stream_archive:
            return None
        archive = cls(settings, factory, recording_id)
        try:
            archive.writer = StreamArchiveWriter(archive.directory, archive_spec(settings),
                                                 on_segment=archive.segment_closed, report=report, name=name,
                                                 lock_timeout=min(settings.job_lease_seconds,
                                                                  _LOCK_WAIT_MAX_SECONDS))
        except (ArchiveError, OSError) as exc:
            why = str(exc) if isinstance(exc, ArchiveError) else reason(exc)
            message = f"the stream is not archived (no review clips): {why}"
            log.error("recording %s: %s", recording_id, message)
            report.errors.append(message)
            return None
        try:
            with session_scope(factory) as session:
                for event_id, start, end in events_awaiting_clip(session=session, recording_id=recording_id):
                    archive._pending[event_id] = (start, end)
        except Exception:  # noqa: BLE001 - a database hiccup: they are cut by the next reader or stay held
            log.exception("recording %s: the events awaiting a review clip could not be read", recording_id)
        archive._thread.start()
        archive._wake.set()
        return archive

    # -- the reader's calls -----------------------------------------------------------------------------------

    def add(self, event_id: int, start: float, end: float) -> None:
        """A committed event of this stream: cut its review clip once the archive holds its window."""
        with self._lock:
            self._pending[event_id] = (start, end)
        self._wake.set()

    def segment_closed(self, segment: Segment) -> None:
        """The writer's listener: more of the stream can be read now."""
        self._wake.set()

    def frames(self, times: Sequence[float], size: tuple[int, int]) -> np.ndarray:
        """Archived frames at ``times`` (closed segments only); raises :class:`ArchiveError`."""
        return read_archive_frames(self.directory, times, size=size)

    def clip_frames(self, clips: dict[int, Sequence[float]], size: tuple[int, int],
                    problems: list[str]) -> dict[int, np.ndarray]:
        """Frames of several clips (position -> frame times), each segment decoded once; a clip the archive cannot
        give is left out, and why is added to ``problems``."""
        if not clips:
            return {}
        times = [t for ts in clips.values() for t in ts]
        try:
            frames = self.frames(times, size)
        except ArchiveError:  # one bad segment: get what the others hold, clip by clip
            got = {}
            for position, ts in clips.items():
                try:
                    got[position] = self.frames(ts, size)
                except ArchiveError as exc:
                    if str(exc) not in problems:
                        problems.append(str(exc))
            return got
        out, row = {}, 0
        for position, ts in clips.items():
            out[position] = frames[row:row + len(ts)]
            row += len(ts)
        return out

    def finish(self) -> None:
        """The stream ended: close the last segment, cut every remaining clip, prune, and stop the thread."""
        self.close_writer()
        self.hold_from = None
        self._final = True
        self._wake.set()
        self._thread.join()

    def abandon(self) -> None:
        """Another reader has the job: stop writing and cutting at once (it recovers and cuts what is left)."""
        self._abandoned = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.close_writer()

    def close_writer(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - a failed close loses at most the segment in flight
                log.exception("recording %s: closing the archive failed", self.recording_id)

    # -- the clip thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        pruned = float("-inf")
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._abandoned:
                return
            final = self._final
            try:
                self._cut_ready(final)
                if not self._abandoned and (final or time.monotonic() - pruned >= RETENTION_EVERY_SECONDS):
                    pruned = time.monotonic()
                    prune_archive(self.settings, self.factory, self.recording_id, hold_from=self.hold_from,
                                  also_held=self._pending_windows())
            except Exception:  # noqa: BLE001 - try again at the next segment
                log.exception("recording %s: archive clips or retention failed", self.recording_id)
            if final:
                return

    def _pending_windows(self) -> list[tuple[float, float]]:
        pre, post = self.settings.review_clip_pre_seconds, self.settings.review_clip_post_seconds
        with self._lock:
            return [(max(0.0, a - pre), b + post) for a, b in self._pending.values()]

    def _cut_ready(self, final: bool) -> None:
        """Cut the clips whose whole window the archive holds (every one when the stream ended)."""
        with self._lock:
            if not self._pending:
                return
        until = read_index(self.directory).end
        post = self.settings.review_clip_post_seconds
        with self._lock:
            ready = sorted((item for item in self._pending.items() if final or item[1][1] + post <= until),
                           key=lambda item: item[1][0])
        for event_id, (start, end) in ready:
            if self._abandoned:
                return
            self._cut(event_id, start, end)
            with self._lock:
                self._pending.pop(event_id, None)

    def _cut(self, event_id: int, start: float, end: float) -> None:
        settings = self.settings
        out = settings.media_dir / "events" / str(event_id) / "clip.mp4"
        error: str | None = None
        try:
            clip = export_archive_clip(self.directory, out, start, end, pre=settings.review_clip_pre_seconds,
                                       post=settings.review_clip_post_seconds, max_side=MAX_OVERLAY_SIDE)
        except ArchiveError as exc:
            error = f"no review clip: {exc}"
        except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the event is kept
            log.exception("recording %s: the review clip of event %s failed", self.recording_id, event_id)
            error = f"no review clip: {reason(exc)} (details in the server log)"
        with session_scope(self.factory) as session:
            if error is not None:
                log.warning("recording %s, event %s: %s", self.recording_id, event_id, error)
                note_media_error(session=session, event_id=event_id, error=error)
            else:
                attach_clip(session=session, event_id=event_id, clip_path=_relative(clip.path, settings),
                            clip_start=clip.start)


def _relative(path: Path, settings: Settings) -> str:
    return str(path.relative_to(settings.data_dir))
