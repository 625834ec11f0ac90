"""What scoring a recording and reading a live stream share: the worker context, the clip spec and event rule
from the settings, and the commit paths of clip rows and events with their explanation media.

The recording task itself is ``server.worker.scoring``; live streams are ``server.streaming``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.clips import Clip as IngestClip
from ingest.clips import ClipSpec
from ingest.export import ExportedClip, export_review_clip
from model.accel import InferenceOptions
from model.events import DetectedEvent, EventRule
from model.weights import LoadedModel
from server.db.session import session_scope
from server.db.tables import Clip, Event, Explanation
from server.frame_maps import event_clips
from server.job_lease import JobLease
from server.media import MAX_OVERLAY_SIDE, RenderedEvent, render_event_media
from server.model_cache import ModelCache
from server.observability.metrics import count_clips
from server.services.webhook_outbox import WebhookEventType, queue_event_webhooks
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What a process needs to run tasks: settings, its own database sessions, its own loaded models."""

    settings: Settings
    session_factory: sessionmaker[Session]
    models: ModelCache


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
    """Clips a previous, interrupted run already committed, as the start of this run (resume, not redo).

    Clips are committed in index order, so they must be exactly 0..k-1; anything else is discarded.
    """
    rows = session.scalars(
        select(Clip).where(Clip.recording_id == recording_id, Clip.model_version_id == version_id).order_by(Clip.index)
    ).all()
    if [row.index for row in rows] != list(range(len(rows))):
        session.execute(delete(Clip).where(Clip.recording_id == recording_id, Clip.model_version_id == version_id))
        return ScoreRun()
    run = ScoreRun()
    for row in rows:
        run.starts.append(row.start)
        run.ends.append(row.end)
        run.scores.append(np.asarray([row.scores[name] for name in loaded_names], dtype=np.float32))
        run.timestamps.append(list(row.timestamps))
    return run


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


def flush_clips(ctx: WorkerContext, pending: list[Clip], lease: JobLease | None, progress: float) -> None:
    """Commit scored clips with the job's progress, in one transaction that also checks (and renews) the lease:
    a worker that lost its job adds no clip."""
    if not pending:
        return
    with session_scope(ctx.session_factory) as session:
        if lease is not None:
            lease.renew(session, progress=progress)
        session.add_all(pending)
    count_clips([len(clip.frame_indices) for clip in pending])  # committed: now they count
    pending.clear()


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
                export: ExportClip) -> Event:
    """Insert one detected event with its explanation media (and review clip where the source is a file)."""
    label_index = class_names.index(found.label)
    peak_clip = max(found.clip_indices, key=lambda i: float(run.scores[i][label_index]))

    def wall(seconds: float) -> datetime | None:
        return started_at + timedelta(seconds=seconds) if started_at is not None else None

    event = Event(
        recording_id=recording_id, label=found.label, start=found.start, end=found.end,
        start_wall=wall(found.start), end_wall=wall(found.end), peak_score=found.peak_score,
        peak_time=found.peak_time, model_version_id=version_id,
    )
    session.add(event)
    session.flush()
    data_dir = ctx.settings.data_dir
    out_dir = ctx.settings.media_dir / "events" / str(event.id)
    media = render(peak_clip, event_clips(run.starts, run.ends, found.start, found.end, peak_clip), label_index,
                   out_dir)
    if media is None:  # stored all the same: a clinician must see the event, unexplained rather than lost
        queue_event_webhooks(session=session, event=event, event_type=WebhookEventType.event_created)
        return event
    if export is not None:
        clip = export(found.start, found.end, out_dir / "clip.mp4")
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
    return event
