"""The last step of scoring a recording, run once: events from the committed clip scores, their explanation media,
and the recording and its scoring job closed.

Why one step after all segments: an event may cross a segment boundary, and hysteresis and gap merging need the
clips on both sides; derived here from every committed clip, in index order, with the same rule, the events are
exactly those of a single pass. *Once* is guarded twice: by the job (only the task that takes the lease of the
waiting scoring job finalises: ``claim_waiting``, one conditional UPDATE) and by the database (an event row is
unique per recording, model version, label and start, inserted with ON CONFLICT DO NOTHING).

The media (the slow part: seconds per event) are rendered before the write transaction into a staging folder,
then moved into each new event's folder inside it, so the transaction stays short whatever the number of events.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.export import ExportedClip
from model.events import DetectedEvent, detect_events
from server.db.session import session_scope
from server.db.tables import Event, EventSource, Job, ModelVersion, Recording, RecordingStatus
from server.frame_maps import event_clips
from server.job_lease import JobLease
from server.media import RenderedEvent
from server.observability.metrics import observe_job
from server.pipeline import WorkerContext, attach_media, event_rule, file_media, insert_event, peak_of
from server.services.jobs import (
    LeaseLost,
    children,
    claim_waiting,
    fail_job,
    new_owner,
    succeed_job,
    wait_for_children,
)
from server.services.recordings import mark_failed
from server.settings import Settings
from server.worker.retry import RetryLater, is_transient
from server.worker.segments import committed_run, load_target

log = logging.getLogger(__name__)

#: One recording's event media rendered at a time per process: finalisations in the threads of one worker
#: would only compete for the same cores and memory. (The attribution engine's hooks act only for the thread
#: that explains, so live streams, which render as their events close, never wait for this lock; the batcher
#: scores with a model of its own.)
RENDER_LOCK = threading.Lock()

def finalise(ctx: WorkerContext, recording_id: int, version_id: int, lease: JobLease | None,
             warnings: list[str]) -> None:
    """Derive, explain and store the recording's events from its committed clips; close the recording (scored,
    or failed without any clip) and the job of ``lease``. A lost lease writes nothing."""
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        version = session.get(ModelVersion, version_id)
        if recording is None or version is None:
            raise LookupError(f"recording {recording_id} or model version {version_id} not found")
        target = load_target(ctx, session, recording, version)
        run = committed_run(session, recording_id, version_id, target.class_names)
        stored = {(label, start) for label, start in session.execute(select(Event.label, Event.start).where(
            Event.recording_id == recording_id, Event.model_version_id == version_id,
            Event.source == EventSource.model))}
    scores = np.stack(run.scores) if run.scores else np.zeros((0, len(target.class_names)), dtype=np.float32)
    detected = detect_events(run.starts, run.ends, scores, target.class_names, event_rule(ctx.settings))
    staging = _staging_dir(ctx.settings.media_dir, recording_id, version_id, lease)
    render, export = file_media(ctx, target.loaded, target.video_path, target.source_size, run)
    staged: list[tuple[DetectedEvent, Path, RenderedEvent | None, ExportedClip | None]] = []
    for number, found in enumerate(detected):
        if (found.label, found.start) in stored:
            continue  # an earlier finalisation that committed stored it, with its media
        out = staging / str(number)
        label_index = target.class_names.index(found.label)
        peak = peak_of(found, run, label_index)
        with RENDER_LOCK:
            media = render(peak, event_clips(run.starts, run.ends, found.start, found.end, peak), label_index, out)
        clip = export(found.start, found.end, out / "clip.mp4") if media is not None and export is not None else None
        staged.append((found, out, media, clip))
        if lease is not None:
            lease.check()  # taken away while rendering: stop before the next event
    with session_scope(ctx.session_factory) as session:
        if lease is not None:
            lease.renew(session)  # still ours: a run that lost its lease must not store the events
        added = 0
        for found, out, media, clip in staged:
            event = insert_event(session, recording_id, version_id, found, target.started_at)
            if event is None:
                continue
            final = ctx.settings.media_dir / "events" / str(event.id)
            media, clip = _move(out, final, media, clip)
            attach_media(ctx, session, event, media, clip)
            added += 1
        _close(session, recording_id, lease, run_clips=len(run.starts), events=len(detected), warnings=warnings)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("recording %s scored: %d clips, %d events (%d new)", recording_id, len(run.starts), len(detected), added)


def _staging_dir(media_dir: Path, recording_id: int, version_id: int, lease: JobLease | None) -> Path:
    """A folder of this run's own to render into, after removing what earlier runs left. Its own: a run that lost
    its lease without noticing (its database connection gone) may still be rendering, and must not fill the folder
    its successor moves from."""
    root = media_dir / "events" / "staging"
    for stale in root.glob(f"{recording_id}-{version_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    owner = re.sub(r"[^A-Za-z0-9_.-]", "_", lease.owner) if lease is not None else "embedded"
    return root / f"{recording_id}-{version_id}-{owner}"


def _close(session, recording_id: int, lease: JobLease | None, *, run_clips: int, events: int,  # type: ignore[no-untyped-def]
           warnings: list[str]) -> None:
    recording = session.get(Recording, recording_id)
    assert recording is not None
    recording.status = RecordingStatus.scored
    recording.clip_count = run_clips
    recording.warnings = list(warnings)
    recording.error = None
    if not run_clips:
        mark_failed(recording=recording, reason="no complete clip could be decoded from this video"
                    + (f" ({warnings[0]})" if warnings else ""))
        if lease is not None:
            fail_job(session=session, job_id=lease.job_id, reason=recording.error or "", owner=lease.owner)
        return
    if lease is not None:
        succeed_job(session=session, job_id=lease.job_id, owner=lease.owner,
                    result={"clips": run_clips, "events": events, "errors": list(warnings)})


def _move(staged: Path, final: Path, media: RenderedEvent | None, clip: ExportedClip | None
          ) -> tuple[RenderedEvent | None, ExportedClip | None]:
    """Move an event's staged media into its own folder and return them with their new paths. A folder left at
    that id by a transaction that rolled back (SQLite reuses ids) is replaced."""
    if not staged.exists():
        return media, clip
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(final)

    def moved(path: Path) -> Path:
        return final / path.relative_to(staged)

    if media is not None:
        media = replace(media, key_frame_path=moved(media.key_frame_path),
                        maps_path=moved(media.maps_path) if media.maps_path is not None else None,
                        explanations=[replace(item, overlay_path=moved(item.overlay_path),
                                              video_path=moved(item.video_path) if item.video_path else None)
                                      for item in media.explanations])
    if clip is not None:
        clip = replace(clip, path=moved(clip.path))
    return media, clip


def claim_finalisation(session: Session, parent_id: int, settings: Settings) -> str | None:
    """Take the lease of a scoring job that waits on segments none of which is live any more: the new owner, or
    None (a segment is still live, or another task took it). Call it in the transaction that ends a segment, so
    the job is never without both a live segment and an owner, and again after it commits: two segments ending
    at once may each see the other still running, but the one that commits last sees both ended."""
    owner = new_owner()
    session.flush()
    claimed = claim_waiting(session=session, job_id=parent_id, owner=owner, lease_seconds=settings.job_lease_seconds)
    return owner if claimed else None


def finalise_when_done(ctx: WorkerContext, parent_id: int, owner: str | None = None) -> None:
    """After a segment ended: finalise its recording if this task holds (``owner``, claimed with the segment's end)
    or can now take the scoring job's lease -- exactly one task does. A transient error hands the job back to
    wait (the caller's retry, or the sweeper, comes back to it); any other failure fails the recording."""
    with session_scope(ctx.session_factory) as session:
        owner = owner or claim_finalisation(session, parent_id, ctx.settings)
        if owner is None:
            return
        parent = session.get(Job, parent_id)
        assert parent is not None
        recording_id, version_id = parent.recording_id, int(parent.params["model_version_id"])
        warnings = [error for child in children(session=session, parent_id=parent_id)
                    for error in (child.result or {}).get("errors", [])]
    assert recording_id is not None
    with observe_job("finalise") as metrics:
        try:
            with JobLease(ctx.session_factory, ctx.settings, parent_id, owner) as lease:
                finalise(ctx, recording_id, version_id, lease, warnings)
        except LeaseLost as exc:
            metrics["outcome"] = "lease_lost"
            log.warning("recording %s: %s; another worker finalises", recording_id, exc)
        except Exception as exc:  # noqa: BLE001 - every failure must land on the recording
            if is_transient(exc):
                metrics["outcome"] = "retry"
                _hand_back(ctx, parent_id, owner)
                raise RetryLater(None, exc) from exc
            metrics["outcome"] = "failed"
            log.exception("recording %s: finalisation failed", recording_id)
            fail_recording(ctx, recording_id, parent_id, owner, f"{type(exc).__name__}: {exc}")


def _hand_back(ctx: WorkerContext, parent_id: int, owner: str) -> None:
    try:
        with session_scope(ctx.session_factory) as session:
            wait_for_children(session=session, job_id=parent_id, owner=owner)
    except Exception:  # noqa: BLE001 - still unreachable: the lease runs out and the sweeper re-queues the job
        log.warning("job %s: could not hand it back after a transient error; its lease will expire", parent_id)


def fail_recording(ctx: WorkerContext, recording_id: int, job_id: int | None, owner: str | None, reason: str) -> None:
    """Fail the recording and its job (owner-checked where given); a lost lease writes nothing."""
    try:
        with session_scope(ctx.session_factory) as session:
            if job_id is not None:
                fail_job(session=session, job_id=job_id, reason=reason, owner=owner)
            recording = session.get(Recording, recording_id)
            if recording is not None:
                mark_failed(recording=recording, reason=reason)
    except LeaseLost:
        log.warning("recording %s: lease lost before its failure could be written", recording_id)
