"""What scoring a recording and reading a live stream share: the worker context, the clip spec and event rule
from the settings, and the commit paths of clip rows and events with their explanation media.

The recording task itself is ``server.worker.scoring``; live streams are ``server.worker.streaming``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.clips import Clip as IngestClip
from ingest.clips import ClipSpec
from ingest.export import ExportedClip, export_review_clip
from model.accel import InferenceOptions
from model.events import DetectedEvent, EventRule
from model.weights import LoadedModel
from server.db.base import utcnow
from server.db.idempotent import insert_new
from server.db.session import session_scope
from server.db.tables import Clip, Event, EventSource, EventStatus, Explanation
from server.frame_maps import event_clips
from server.job_lease import JobLease
from server.media import MAX_OVERLAY_SIDE, RenderedEvent, render_event_media
from server.model_cache import ModelCache
from server.observability.metrics import count_clips
from server.services.webhook_outbox import WebhookEventType, queue_event_webhooks
from server.settings import Settings
from server.worker.batcher import Batcher

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What a process needs to run tasks: settings, its own database sessions, its own loaded models, its batcher
    (made at first use: one per process, see ``server.worker.batcher``), and how it hands a segment job to a
    worker (set by the dispatcher or the Celery worker that runs this process's tasks; None: a recording is
    scored in one piece by the task that starts it)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    models: ModelCache
    dispatch_segment: Callable[[int], object] | None = None
    _batcher: Batcher | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def batcher(self) -> Batcher:
        """This process's batcher (the one owner of the scoring forward pass)."""
        with self._lock:
            if self._batcher is None:
                self._batcher = Batcher(max_batch=self.settings.score_batch_size,
                                        max_wait=self.settings.score_batch_wait_seconds,
                                        options=inference_options(self.settings))
            return self._batcher

    def close(self) -> None:
        """Stop the batcher thread, if one started."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()


@dataclass
class ScoreRun:
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    timestamps: list[list[float]] = field(default_factory=list)


def clip_spec_for(loaded: LoadedModel, settings: Settings) -> ClipSpec:
    """The clip cutting that matches the model's input spec."""
    spec = loaded.input_spec
    return ClipSpec(
        clip_seconds=spec.clip_seconds,
        stride_seconds=settings.clip_stride_seconds or spec.clip_seconds,
        sample_fps=spec.sample_fps,
        size=tuple(spec.size),  # type: ignore[arg-type]
    )


def inference_options(settings: Settings) -> InferenceOptions:
    """The scorer's precision, memory format and decode-ahead depth from the settings."""
    return InferenceOptions(precision=settings.inference_precision, channels_last=settings.inference_channels_last,
                            prefetch_batches=settings.decode_prefetch_batches)


def event_rule(settings: Settings) -> EventRule:
    return EventRule(
        threshold=settings.event_threshold,
        low_threshold=settings.event_low_threshold,
        min_duration=settings.event_min_duration,
        merge_gap=settings.event_merge_gap,
    )


def committed_clips(session: Session, recording_id: int, version_id: int, loaded_names: list[str]) -> ScoreRun:
    """The clips 0..k-1 an earlier, interrupted run already committed, as the start of this run (resume, not redo).

    Only the unbroken run from index 0 counts; nothing is deleted (segments of one recording commit out of order,
    and a clip is never committed twice: its row is unique).
    """
    rows = session.scalars(
        select(Clip).where(Clip.recording_id == recording_id, Clip.model_version_id == version_id).order_by(Clip.index)
    ).all()
    run = ScoreRun()
    for position, row in enumerate(rows):
        if row.index != position:
            break
        add_row(run, row, loaded_names)
    return run


def add_row(run: ScoreRun, row: Clip, class_names: list[str]) -> None:
    """Append a committed clip row to ``run`` (scores in ``class_names`` order)."""
    run.starts.append(row.start)
    run.ends.append(row.end)
    run.scores.append(np.asarray([row.scores[name] for name in class_names], dtype=np.float32))
    run.timestamps.append(list(row.timestamps))


def record_clip(run: ScoreRun, clip: IngestClip, probs: np.ndarray, recording_id: int, version_id: int,
                class_names: list[str]) -> Clip:
    """Add a scored clip to the run and return its (not yet added) database row."""
    run.starts.append(clip.start)
    run.ends.append(clip.end)
    run.scores.append(np.asarray(probs, dtype=np.float32))
    times = [float(t) for t in clip.timestamps]
    run.timestamps.append(times)
    return Clip(
        recording_id=recording_id, index=clip.index, start=clip.start, end=clip.end,
        start_wall=clip.start_wall, end_wall=clip.end_wall,
        frame_indices=[int(i) for i in clip.frame_indices], timestamps=times,
        scores={name: round(float(p), 5) for name, p in zip(class_names, probs, strict=True)},
        model_version_id=version_id,
    )


#: the columns a clip row is inserted with (the id comes from the database)
_CLIP_COLUMNS = tuple(column.key for column in Clip.__table__.columns if column.key != "id")


def commit_clips(session: Session, pending: list[Clip]) -> set[int]:
    """Insert the clip rows not stored yet (ON CONFLICT DO NOTHING); returns the indices that went in."""
    if not pending:
        return set()
    rows = [{key: getattr(clip, key) for key in _CLIP_COLUMNS} for clip in pending]
    return set(session.scalars(insert_new(session, Clip, rows).returning(Clip.index)))


def flush_clips(ctx: WorkerContext, pending: list[Clip], lease: JobLease | None, progress: float) -> int:
    """Commit scored clips with the job's progress, in one transaction that also checks (and renews) the lease:
    a worker that lost its job adds no clip, and a batch goes in whole or not at all. Clips already stored (a
    duplicate task, an overlapping run) are skipped by their unique constraint. Returns how many went in."""
    if not pending:
        return 0
    with session_scope(ctx.session_factory) as session:
        if lease is not None:
            lease.renew(session, progress=progress)
        inserted = commit_clips(session, pending)
    count_clips([len(clip.frame_indices) for clip in pending if clip.index in inserted])  # committed: now they count
    pending.clear()
    return len(inserted)


#: renders an event's explanation media: (peak clip position in the run, positions of the clips to store
#: per-frame maps of, label index, out dir) -> media, or None where no frame of the event can be read any more
#: (a live event whose frames a restart lost)
RenderMedia = Callable[[int, list[int], int, Path], RenderedEvent | None]
#: writes the review clip of an event: (start s, end s, out path) -> the clip, or None where no file exists
ExportClip = Callable[[float, float, Path], ExportedClip] | None


def file_media(ctx: WorkerContext, loaded: LoadedModel, video_path: Path, source_size: tuple[int, int],
               run: ScoreRun) -> tuple[RenderMedia, ExportClip]:
    """Media makers for a recording on disk: frames are read again from the file."""

    def render(peak: int, clips: list[int], label_index: int, out_dir: Path) -> RenderedEvent:
        # a file's clips are committed in index order from 0, so a clip's position in the run is its index
        return render_event_media(loaded=loaded, video_path=video_path, timestamps=run.timestamps[peak],
                                  label_index=label_index, source_size=source_size, out_dir=out_dir,
                                  methods=tuple(ctx.settings.explain_methods),
                                  map_clips=[(i, run.timestamps[i]) for i in clips], peak_index=peak)

    def export(start: float, end: float, out: Path) -> ExportedClip:
        return export_review_clip(video_path, out, start, end, pre=ctx.settings.review_clip_pre_seconds,
                                  post=ctx.settings.review_clip_post_seconds, max_side=MAX_OVERLAY_SIDE)

    return render, export


def store_event(ctx: WorkerContext, session: Session, recording_id: int, version_id: int, found: DetectedEvent,
                run: ScoreRun, class_names: list[str], started_at: datetime | None, render: RenderMedia,
                export: ExportClip) -> Event | None:
    """Insert one detected event with its explanation media (and review clip where the source is a file), rendered
    into the event's own folder; None (and nothing rendered) when this model version already stored it."""
    event = insert_event(session, recording_id, version_id, found, started_at)
    if event is None:
        return None
    label_index = class_names.index(found.label)
    peak_clip = peak_of(found, run, label_index)
    out_dir = ctx.settings.media_dir / "events" / str(event.id)
    media = render(peak_clip, event_clips(run.starts, run.ends, found.start, found.end, peak_clip), label_index,
                   out_dir)
    clip = export(found.start, found.end, out_dir / "clip.mp4") if media is not None and export is not None else None
    attach_media(ctx, session, event, media, clip)
    return event


def peak_of(found: DetectedEvent, run: ScoreRun, label_index: int) -> int:
    """The event's clip (position in ``run``) with the highest score for its label: the one explained."""
    return max(found.clip_indices, key=lambda i: float(run.scores[i][label_index]))


def insert_event(session: Session, recording_id: int, version_id: int, found: DetectedEvent,
                 started_at: datetime | None) -> Event | None:
    """Insert a model event (flushed, with its id), or None where this version already flagged one of this label
    at this start on the recording: the unique index decides (ON CONFLICT DO NOTHING), not a read before."""

    def wall(seconds: float) -> datetime | None:
        return started_at + timedelta(seconds=seconds) if started_at is not None else None

    row = {"recording_id": recording_id, "label": found.label, "start": found.start, "end": found.end,
           "start_wall": wall(found.start), "end_wall": wall(found.end), "peak_score": found.peak_score,
           "peak_time": found.peak_time, "model_version_id": version_id, "source": EventSource.model,
           "status": EventStatus.flagged, "created_at": utcnow()}
    event_id = session.scalar(insert_new(session, Event, [row]).returning(Event.id))
    return session.get(Event, event_id) if event_id is not None else None


def attach_media(ctx: WorkerContext, session: Session, event: Event, media: RenderedEvent | None,
                 clip: ExportedClip | None) -> None:
    """Point a new event at its rendered media and review clip (files under the data directory) and queue its
    webhooks. Without media it is stored all the same: a clinician must see the event, unexplained rather than
    lost."""
    data_dir = ctx.settings.data_dir
    if media is not None:
        if clip is not None:
            event.clip_path, event.clip_start = str(clip.path.relative_to(data_dir)), clip.start
        event.key_frame_time = media.key_frame_time
        event.maps_path = str(media.maps_path.relative_to(data_dir)) if media.maps_path is not None else None
        event.key_frame_path = str(media.key_frame_path.relative_to(data_dir))
        for item in media.explanations:
            session.add(Explanation(
                event_id=event.id, method=item.method, key_frame_time=media.key_frame_time,
                overlay_path=str(item.overlay_path.relative_to(data_dir)),
                video_path=str(item.video_path.relative_to(data_dir)) if item.video_path else None,
                agreement=item.agreement,
            ))
    queue_event_webhooks(session=session, event=event, event_type=WebhookEventType.event_created)
