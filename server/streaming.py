"""Live streams: ``POST /recordings {"url": ...}`` -> clips committed as they complete -> events as they close.

The stream is read by ``ingest.stream.iter_stream_clips`` (reconnects with a bounded, doubling backoff; each
outage is a gap; the destination policy is checked before every connection; docs/streams.md). Each
clip is scored and committed at once. An event is stored as soon as it can no longer grow (its end lies more
than the merge gap behind the newest clip), with explanations rendered from the clip frames kept in memory:
a stream's frames are not on disk to be read again, so live events have no review clip. Stopping is a status
change on the job (``POST /recordings/{id}/stop``), polled once a second.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from pathlib import Path

import numpy as np

from ingest.clips import Clip as IngestClip
from ingest.clips import IngestReport
from ingest.errors import IngestError
from ingest.stream import StreamSpec, iter_stream_clips, scrub
from model.events import detect_events
from model.inference import ClipScorer
from server.db.base import utcnow
from server.db.session import session_scope
from server.db.tables import Job, JobStatus, Recording, RecordingStatus
from server.frame_maps import ClipFrames, map_size
from server.media import RenderedEvent, render_frames_media
from server.pipeline import (
    ScoreRun,
    WorkerContext,
    clip_spec_for,
    event_rule,
    flush_clips,
    record_clip,
    store_event,
)
from server.security.secret_box import SecretUnreadable
from server.services.models import get_active_model
from server.services.recordings import mark_failed
from server.services.streams import STREAM_KIND, stream_url

__all__ = ["STREAM_KIND", "refuse_stream", "run_stream"]

log = logging.getLogger(__name__)
#: clips kept in memory to explain events after they close (frames are small: model input size).
FRAME_BUFFER_CLIPS = 256


def _watch_for_stop(ctx: WorkerContext, job_id: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with session_scope(ctx.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None or job.status == JobStatus.cancelled:
                stop.set()


def run_stream(ctx: WorkerContext, recording_id: int, job_id: int) -> None:
    """Ingest and score the live stream of ``recording_id`` until stopped (or its reconnect budget runs out).

    The URL is decrypted here, just before the stream is opened, and lives only in this call's variables and
    the reader; every message that leaves (job and recording errors, warnings, logs) is scrubbed of it. The
    destination policy is checked again before every connection (DNS rebinding).
    """
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        recording = session.get(Recording, recording_id)
        version = get_active_model(session=session)
        if job is None or recording is None or job.status != JobStatus.queued or version is None:
            return
        job.status, job.started_at = JobStatus.running, utcnow()
        started_at = recording.started_at or utcnow()
        recording.started_at = started_at
        version_id, class_names = version.id, list(version.class_names)
        unreadable = "the stream could not start"
        url: str | None
        try:
            url = stream_url(settings=ctx.settings, job=job)
        except SecretUnreadable as exc:
            url = None
            unreadable = f"{exc} (WARDWATCH_SECRET_KEYS): the stream URL cannot be read; start the stream again"
        loaded = ctx.models.get(version) if url is not None else None
    run = ScoreRun()
    report = IngestReport()
    if url is None or loaded is None:
        _finish(ctx, recording_id, job_id, run, report, unreadable, url=None)
        return
    stop = threading.Event()
    threading.Thread(target=_watch_for_stop, args=(ctx, job_id, stop), daemon=True,
                     name=f"wardwatch-stopwatch-{recording_id}").start()
    frames: deque[tuple[int, IngestClip]] = deque(maxlen=FRAME_BUFFER_CLIPS)
    emitted: set[tuple[str, float]] = set()
    rule = event_rule(ctx.settings)
    scorer = ClipScorer(loaded, batch_size=1)  # latency over throughput: score each clip as it completes
    error: str | None = None
    try:
        clips = iter_stream_clips(StreamSpec(url), clip_spec_for(loaded, ctx.settings), started_at=started_at,
                                  stop=stop, reconnect=ctx.settings.stream_reconnect(), report=report,
                                  destinations=ctx.settings.stream_destinations())
        gaps_noted = 0
        for clip, probs in scorer.score(clips):
            position = len(run.starts)
            frames.append((position, clip))
            flush_clips(ctx, [record_clip(run, clip, probs, recording_id, version_id, class_names)], job_id, 0.0)
            if len(report.gaps) > gaps_noted:  # an outage just ended: the timeline shows it while the stream runs
                gaps_noted = _note_gaps(ctx, job_id, report)
            _emit_closed(ctx, recording_id, version_id, class_names, started_at, run, frames, emitted, rule,
                         final=False, loaded=loaded)
    except IngestError as exc:  # the stream's own end: refused destination, budget spent, not video
        error = scrub(str(exc), url)
        log.warning("stream of recording %s ended: %s", recording_id, error)
    except Exception as exc:  # noqa: BLE001 - the reason must land on the recording
        error = scrub(str(exc), url)
        log.error("stream of recording %s failed: %s", recording_id,
                  scrub("".join(traceback.format_exception(exc)), url))
    finally:
        stop.set()
    _emit_closed(ctx, recording_id, version_id, class_names, started_at, run, frames, emitted, rule, final=True,
                 loaded=loaded)
    _finish(ctx, recording_id, job_id, run, report, error, url=url)


def _finish(ctx: WorkerContext, recording_id: int, job_id: int, run: ScoreRun, report: IngestReport,
            error: str | None, *, url: str | None) -> None:
    """Write the outcome on the recording and the job (messages scrubbed of the URL's secrets)."""
    def clean(text: str) -> str:
        return scrub(text, url) if url is not None else text

    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        job = session.get(Job, job_id)
        assert recording is not None and job is not None
        recording.clip_count = len(run.starts)
        recording.duration = run.ends[-1] if run.ends else 0.0
        recording.warnings = [*(clean(e) for e in report.errors),
                              *(f"stream gap {a:.1f}-{b:.1f} s" for a, b in report.gaps)]
        if error is not None and not run.starts:
            mark_failed(recording=recording, reason=error)
        else:
            recording.status = RecordingStatus.scored
            if error is not None:
                recording.error = error
        cancelled = job.status == JobStatus.cancelled
        job.status = JobStatus.succeeded if cancelled or error is None else JobStatus.failed
        job.error, job.finished_at, job.progress = error, utcnow(), 1.0
        job.result = {"clips": len(run.starts), "gaps": [list(g) for g in report.gaps], "stopped": cancelled}


def _note_gaps(ctx: WorkerContext, job_id: int, report: IngestReport) -> int:
    """Put the outages so far on the running job (``result["gaps"]``, as the finished job has them)."""
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.result = {**(job.result or {}), "gaps": [list(g) for g in report.gaps]}
    return len(report.gaps)


def refuse_stream(ctx: WorkerContext, recording_id: int, job_id: int, reason: str) -> None:
    """End a stream job that could not get a reader (the embedded pool is full)."""
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in (JobStatus.queued, JobStatus.running):
            return
    _finish(ctx, recording_id, job_id, ScoreRun(), IngestReport(), reason, url=None)


def _emit_closed(ctx: WorkerContext, recording_id: int, version_id: int, class_names: list[str], started_at,  # type: ignore[no-untyped-def]
                 run: ScoreRun, frames: deque[tuple[int, IngestClip]], emitted: set[tuple[str, float]], rule,
                 *, final: bool, loaded) -> None:
    """Store events that can no longer grow (all of them when the stream ended)."""
    if not run.starts:
        return
    newest = run.ends[-1]
    found = detect_events(run.starts, run.ends, np.stack(run.scores), class_names, rule)
    ready = [e for e in found if (final or e.end < newest - rule.merge_gap) and (e.label, e.start) not in emitted]
    if not ready:
        return
    buffered = dict(frames)

    def render(peak: int, clips: list[int], label_index: int, out_dir: Path) -> RenderedEvent:
        clip = buffered.get(peak)
        if clip is None:
            raise RuntimeError(f"frames of clip {peak} are no longer buffered")
        # maps of the event's clips still in the buffer (all of them unless the event outlasted the buffer)
        map_clips = [ClipFrames(buffered[i].index, list(run.timestamps[i]), buffered[i].frames)
                     for i in clips if i in buffered]
        height, width = clip.frames.shape[1:3]
        return render_frames_media(loaded=loaded, model_frames=clip.frames, display_frames=clip.frames,
                                   timestamps=list(run.timestamps[peak]), label_index=label_index,
                                   out_dir=out_dir, methods=tuple(ctx.settings.explain_methods),
                                   map_clips=map_clips, peak_index=clip.index, maps_size=map_size(width, height))

    with session_scope(ctx.session_factory) as session:
        for event in ready:
            store_event(ctx, session, recording_id, version_id, event, run, class_names, started_at, render, None)
            emitted.add((event.label, event.start))
