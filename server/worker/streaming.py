"""Live streams: ``POST /recordings {"url": ...}`` -> clips committed as they complete -> events as they close.

The stream is read by ``ingest.stream.iter_stream_clips`` (reconnects with a bounded, doubling backoff; each
outage is a gap; the destination policy is checked before every connection; docs/streams.md) and archived to
disk as it is read (``server.stream_archive``: rolling segment files and their index). Each clip is scored and
committed at once. An event is stored as soon as it can no longer grow (its end lies more than the merge gap
behind the newest clip), with explanations rendered from the clip frames kept in memory (from the archive for
clips no longer held); its review clip is cut from the archive once the segments holding its window are closed.
Stopping is a status change on the job (``POST /recordings/{id}/stop``), polled once a second.

The job is leased while it is read (``server.job_lease``). When its reader dies (server restart, worker
killed), the sweeper or the next start-up re-queues the job and a new reader resumes the recording: clip
indices and recording seconds continue after the clips already committed, the outage is a gap (in the job, the
recording's warnings and the archive's index), the archive continues after the segment the dead reader left
(recovered up to its last complete packet), and the events already stored are not stored again. An event still
open at the crash is explained from the archive; the clips the dead reader had not cut are cut by the new one.
When the archive cannot give an event's media (a segment corrupt, truncated or gone), the event is stored all the
same with the reason in ``event.media_error``.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from sqlalchemy import select

from ingest.clips import Clip as IngestClip
from ingest.clips import IngestReport
from ingest.errors import IngestError
from ingest.stream import StreamResume, StreamSpec, iter_stream_clips, redact_url, scrub
from model.events import DetectedEvent, detect_events
from model.inference import ClipScorer
from server.db.base import utcnow
from server.db.session import session_scope
from server.db.tables import Clip, Event, Job, JobStatus, Recording, RecordingStatus
from server.frame_maps import ClipFrames, map_size
from server.job_lease import JobLease
from server.media import RenderedEvent, render_frames_media
from server.pipeline import (
    ScoreRun,
    WorkerContext,
    clip_spec_for,
    committed_clips,
    event_rule,
    flush_clips,
    inference_options,
    record_clip,
    store_event,
)
from server.security.secret_box import SecretUnreadable
from server.services.jobs import (
    IllegalTransition,
    LeaseLost,
    fail_job,
    is_cancelled,
    new_owner,
    start_job,
    succeed_job,
)
from server.services.models import get_active_model
from server.services.recordings import mark_failed
from server.services.stream_archive import note_media_error
from server.services.streams import STREAM_KIND, stream_url
from server.stream_archive import StreamArchive

__all__ = ["STREAM_KIND", "refuse_stream", "run_stream"]

log = logging.getLogger(__name__)
#: clips kept in memory to explain events after they close (frames are small: model input size).
FRAME_BUFFER_CLIPS = 256


def _watch_for_stop(ctx: WorkerContext, lease: JobLease, stop: threading.Event) -> None:
    """Stop the reader when the stream is stopped through the API or its lease went to another reader."""
    while not stop.wait(1.0):
        if lease.lost.is_set():
            stop.set()
            return
        try:
            with session_scope(ctx.session_factory) as session:
                if is_cancelled(session=session, job_id=lease.job_id):
                    stop.set()
        except Exception:  # noqa: BLE001 - a database hiccup: look again in a second
            log.exception("stream job %s: stop check failed", lease.job_id)


def run_stream(ctx: WorkerContext, recording_id: int, job_id: int) -> None:
    """Ingest and score the live stream of ``recording_id`` until stopped (or its reconnect budget runs out).

    The URL is decrypted here, just before the stream is opened, and lives only in this call's variables and
    the reader; every message that leaves (job and recording errors, warnings, logs) is scrubbed of it. The
    destination policy is checked again before every connection (DNS rebinding).
    """
    owner = new_owner()
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        version = get_active_model(session=session)
        if recording is None or version is None:
            return
        try:
            job = start_job(session=session, job_id=job_id, owner=owner, lease_seconds=ctx.settings.job_lease_seconds)
        except (IllegalTransition, LookupError) as exc:
            log.info("stream of recording %s: %s; nothing to do", recording_id, exc)
            return
        started_at = recording.started_at or utcnow()
        recording.started_at = started_at
        recording.status = RecordingStatus.ingesting
        version_id, class_names = version.id, list(version.class_names)
        run, resume, emitted = _resume_point(session, recording_id, version_id, class_names)
        # Outages an earlier reader noted (kept on the job as they happen), so a second restart loses none.
        earlier_gaps = [tuple(gap) for gap in (job.result or {}).get("gaps", [])] if resume is not None else []
        unreadable = "the stream could not start"
        url: str | None
        try:
            url = stream_url(settings=ctx.settings, job=job)
        except SecretUnreadable as exc:
            url = None
            unreadable = f"{exc} (WARDWATCH_SECRET_KEYS): the stream URL cannot be read; start the stream again"
        loaded = ctx.models.get(version) if url is not None else None
    report = IngestReport(gaps=list(earlier_gaps))
    with JobLease(ctx.session_factory, ctx.settings, job_id, owner) as lease:
        try:
            if url is None or loaded is None:
                _finish(ctx, recording_id, lease, run, report, unreadable, url=None)
                return
            _read(ctx, recording_id, lease, url, loaded, version_id, class_names, started_at, run, report,
                  resume, emitted)
        except LeaseLost as exc:
            log.warning("stream of recording %s: %s; another reader carries on", recording_id, exc)


def _resume_point(session, recording_id: int, version_id: int,  # type: ignore[no-untyped-def]
                  class_names: list[str]) -> tuple[ScoreRun, StreamResume | None, set[tuple[str, float]]]:
    """The clips and events an earlier reader of this recording committed before it died, and where to go on."""
    run = committed_clips(session, recording_id, version_id, loaded_names=class_names)
    if not run.starts:
        return run, None, set()
    last = session.scalars(select(Clip.frame_indices).where(Clip.recording_id == recording_id,
                                                            Clip.model_version_id == version_id)
                           .order_by(Clip.index.desc()).limit(1)).first() or [-1]
    emitted = {(label, start) for label, start in session.execute(
        select(Event.label, Event.start).where(Event.recording_id == recording_id,
                                               Event.model_version_id == version_id))}
    log.info("stream of recording %s: resuming after %d committed clips (%.1f s)", recording_id,
             len(run.starts), run.ends[-1])
    return run, StreamResume(after=run.ends[-1], next_clip=len(run.starts), next_frame=int(max(last)) + 1), emitted


def _read(ctx: WorkerContext, recording_id: int, lease: JobLease, url: str, loaded, version_id: int,  # type: ignore[no-untyped-def]
          class_names: list[str], started_at, run: ScoreRun, report: IngestReport,
          resume: StreamResume | None, emitted: set[tuple[str, float]]) -> None:
    """Read, archive, score and commit until stopped; then store the last events and the outcome."""
    archive = StreamArchive.open(ctx.settings, ctx.session_factory, recording_id, report=report,
                                 name=redact_url(url))
    try:
        _read_archived(ctx, recording_id, lease, url, loaded, version_id, class_names, started_at, run, report,
                       resume, emitted, archive)
    except BaseException:
        if archive is not None:  # the job went to another reader, or this one failed: it stops writing now
            archive.abandon()
        raise


def _read_archived(ctx: WorkerContext, recording_id: int, lease: JobLease, url: str, loaded,  # type: ignore[no-untyped-def]
                   version_id: int, class_names: list[str], started_at, run: ScoreRun, report: IngestReport,
                   resume: StreamResume | None, emitted: set[tuple[str, float]], archive: StreamArchive | None) -> None:
    stop = threading.Event()
    threading.Thread(target=_watch_for_stop, args=(ctx, lease, stop), daemon=True,
                     name=f"wardwatch-stopwatch-{recording_id}").start()
    frames: deque[tuple[int, IngestClip]] = deque(maxlen=FRAME_BUFFER_CLIPS)
    rule = event_rule(ctx.settings)
    noted_gaps = len(report.gaps)
    # latency over throughput: score each clip as it completes; no decode thread (prefetch 0), because the
    # stream reader paces itself and is closed by this thread when the stream is stopped
    scorer = ClipScorer(loaded, batch_size=1, options=replace(inference_options(ctx.settings), prefetch_batches=0))
    error: str | None = None
    clips = iter_stream_clips(StreamSpec(url), clip_spec_for(loaded, ctx.settings), started_at=started_at,
                              stop=stop, reconnect=ctx.settings.stream_reconnect(), report=report,
                              destinations=ctx.settings.stream_destinations(), resume=resume,
                              archive=archive.writer if archive is not None else None)
    scored = scorer.score(clips)
    try:
        for clip, probs in scored:
            position = len(run.starts)
            frames.append((position, clip))
            flush_clips(ctx, [record_clip(run, clip, probs, recording_id, version_id, class_names)], lease, 0.0)
            if len(report.gaps) != noted_gaps:  # an outage: on the job now, not only when the stream ends
                noted_gaps = len(report.gaps)
                with session_scope(ctx.session_factory) as session:
                    lease.renew(session, result={"gaps": [list(g) for g in report.gaps]})
            _emit_closed(ctx, recording_id, version_id, class_names, started_at, run, frames, emitted, rule,
                         final=False, loaded=loaded, archive=archive)
    except LeaseLost:
        raise
    except IngestError as exc:  # the stream's own end: refused destination, budget spent, not video
        error = scrub(str(exc), url)
        log.warning("stream of recording %s ended: %s", recording_id, error)
    except Exception as exc:  # noqa: BLE001 - the reason must land on the recording
        error = scrub(str(exc), url)
        log.error("stream of recording %s failed: %s", recording_id,
                  scrub("".join(traceback.format_exception(exc)), url))
    finally:
        stop.set()
        scored.close()  # the connection is closed now, not when the generators are collected
        clips.close()
    lease.check()  # stopped because another reader has the job: it stores the rest
    if archive is not None:
        archive.close_writer()  # the last segment is readable from here on
    _emit_closed(ctx, recording_id, version_id, class_names, started_at, run, frames, emitted, rule, final=True,
                 loaded=loaded, archive=archive)
    if archive is not None:
        archive.finish()  # every review clip cut before the job ends
    _finish(ctx, recording_id, lease, run, report, error, url=url)


def _finish(ctx: WorkerContext, recording_id: int, lease: JobLease | None, run: ScoreRun, report: IngestReport,
            error: str | None, *, url: str | None, job_id: int | None = None) -> None:
    """Write the outcome on the recording and the job (messages scrubbed of the URL's secrets)."""
    def clean(text: str) -> str:
        return scrub(text, url) if url is not None else text

    job_id = lease.job_id if lease is not None else job_id
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
        result = {"clips": len(run.starts), "gaps": [list(g) for g in report.gaps], "stopped": cancelled}
        owner = lease.owner if lease is not None else None
        if cancelled or error is None:
            succeed_job(session=session, job_id=job.id, owner=owner, result=result)
        else:
            fail_job(session=session, job_id=job.id, reason=error, owner=owner, result=result)


def refuse_stream(ctx: WorkerContext, recording_id: int, job_id: int, reason: str) -> None:
    """End a stream job that could not get a reader (the embedded pool is full); it never started."""
    with session_scope(ctx.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            return
    _finish(ctx, recording_id, None, ScoreRun(), IngestReport(), reason, url=None, job_id=job_id)


def _emit_closed(ctx: WorkerContext, recording_id: int, version_id: int, class_names: list[str], started_at,  # type: ignore[no-untyped-def]
                 run: ScoreRun, frames: deque[tuple[int, IngestClip]], emitted: set[tuple[str, float]], rule,
                 *, final: bool, loaded, archive: StreamArchive | None = None) -> None:
    """Store events that can no longer grow (all of them when the stream ended); queue their review clips."""
    if not run.starts:
        return
    newest = run.ends[-1]
    found = detect_events(run.starts, run.ends, np.stack(run.scores), class_names, rule)
    ready = [e for e in found if (final or e.end < newest - rule.merge_gap) and (e.label, e.start) not in emitted]
    if archive is not None and not final:  # what the archive must keep for events still open: any of any length
        # (one still shorter than the minimum duration may grow into one), and whatever the next clip starts
        growing = detect_events(run.starts, run.ends, np.stack(run.scores), class_names, replace(rule, min_duration=0))
        still_open = [e.start for e in growing if e.end >= newest - rule.merge_gap]
        archive.hold_from = max(0.0, min([*still_open, run.starts[-1]]) - ctx.settings.review_clip_pre_seconds)
    if not ready:
        return
    buffered = dict(frames)
    size = tuple(loaded.input_spec.size)
    problems: list[str] = []

    def render_for(event: DetectedEvent):  # type: ignore[no-untyped-def]
        def render(peak: int, clips: list[int], label_index: int, out_dir: Path) -> RenderedEvent | None:
            # the model-size frames of the clips to explain: from memory, else from the archive (a restart, or an
            # event longer than the memory holds), each segment decoded once
            wanted = [i for i in dict.fromkeys([peak, *clips]) if i not in buffered]
            archived = archive.clip_frames({i: run.timestamps[i] for i in wanted}, size, problems) \
                if archive is not None else {}
            held = {i: buffered[i].frames for i in buffered} | archived
            if peak not in held:  # e.g. the peak came before a restart: explain the best clip still held
                candidates = [i for i in event.clip_indices if i in held]
                if not candidates:
                    log.warning("stream of recording %s: the frames of the %s event at %.1f s are lost; stored "
                                "without explanations", recording_id, event.label, event.start)
                    return None
                peak = max(candidates, key=lambda i: float(run.scores[i][label_index]))
            peak_frames = held[peak]
            map_clips = [ClipFrames(i, list(run.timestamps[i]), held[i]) for i in clips if i in held]
            height, width = peak_frames.shape[1:3]
            return render_frames_media(loaded=loaded, model_frames=peak_frames, display_frames=peak_frames,
                                       timestamps=list(run.timestamps[peak]), label_index=label_index,
                                       out_dir=out_dir, methods=tuple(ctx.settings.explain_methods),
                                       map_clips=map_clips, peak_index=peak,
                                       maps_size=map_size(width, height))
        return render

    stored: list[tuple[int, float, float]] = []
    with session_scope(ctx.session_factory) as session:
        for event in ready:
            problems.clear()
            row = store_event(ctx, session, recording_id, version_id, event, run, class_names, started_at,
                              render_for(event), None)
            emitted.add((event.label, event.start))
            if row is None:  # stored already (a reader that lost its lease got there first): nothing more to do
                continue
            if row.key_frame_path is None:
                reason = "; ".join(problems) if problems else "its frames were lost with the reader that died"
                note_media_error(session=session, event_id=row.id, error=f"no explanations: {reason}")
            elif problems:  # explained, but some of its clips' maps could not be made
                note_media_error(session=session, event_id=row.id,
                                 error=f"explanation maps incomplete: {'; '.join(problems)}")
            stored.append((row.id, event.start, event.end))
    if archive is not None:
        for event_id, start, end in stored:
            archive.add(event_id, start, end)
