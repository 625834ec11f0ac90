"""Segments of a recording: the plan (clip index ranges) and scoring one range into committed clip rows.

A segment is a range of clip *indices*, so segments cut exactly on clip boundaries: ``iter_clips(start_index=k)``
yields clip ``k`` onwards with exactly the indices, times, frames and pixels of a single pass (a packet-only scan
up to it, then a seek), so the union of the segments' clips is the clip set of one pass. Segments only score and
commit clips; the events are derived once all are done (``server.worker.finalise``), from the committed scores,
with the same rule as one pass, so an event that crosses a segment boundary is found whole.

Each range resumes after the clips already committed in it (a retry, a worker that died), and a batch of clips
commits in one transaction with the lease check and the recording job's progress (clips committed across all
segments / clips expected).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingest.clips import Clip as IngestClip
from ingest.clips import ClipSpec, IngestReport, iter_clips
from model.weights import LoadedModel
from server.db.session import session_scope
from server.db.tables import Clip, ModelVersion, Recording
from server.job_lease import JobLease
from server.observability.metrics import count_clips
from server.pipeline import ScoreRun, WorkerContext, add_row, clip_spec_for, commit_clips, record_clip
from server.services.jobs import note_progress

log = logging.getLogger(__name__)


class ParentClosed(RuntimeError):
    """The recording's scoring job ended (a sibling segment failed): this segment stops without writing more."""


@dataclass(frozen=True)
class Segment:
    """Clips ``first .. end - 1`` of a recording; ``end`` None: to the end of the file."""

    first: int
    end: int | None

    def as_params(self) -> dict[str, int | None]:
        return {"first": self.first, "end": self.end}

    @classmethod
    def from_params(cls, params: dict) -> Segment:  # type: ignore[type-arg]
        return cls(int(params["first"]), None if params.get("end") is None else int(params["end"]))


def expected_clips(duration: float, spec: ClipSpec) -> int:
    """Clips a gap-free recording of ``duration`` seconds gives: one per stride whose whole clip fits."""
    if duration < spec.clip_seconds:
        return 0
    return int(math.floor((duration - spec.clip_seconds) / spec.stride_seconds + 1e-9)) + 1


def plan_segments(*, duration: float, spec: ClipSpec, segment_seconds: float) -> list[Segment]:
    """Consecutive index ranges of ``segment_seconds`` of recording time each (on the stride grid); the last one
    is open-ended, so clips past an underestimated duration are scored too. A short recording is one segment."""
    per = max(1, round(segment_seconds / spec.stride_seconds))
    count = max(1, math.ceil(expected_clips(duration, spec) / per))
    return [Segment(i * per, (i + 1) * per if i < count - 1 else None) for i in range(count)]


@dataclass(frozen=True)
class Target:
    """What scoring any part of one recording needs: the file, the model version and its clip cutting."""

    recording_id: int
    version_id: int
    class_names: list[str]
    video_path: Path
    started_at: datetime | None
    source_size: tuple[int, int]
    expected: int  # clips expected in the whole recording (progress)
    loaded: LoadedModel
    spec: ClipSpec


def load_target(ctx: WorkerContext, session: Session, recording: Recording, version: ModelVersion) -> Target:
    """The scoring target of ``recording`` by ``version`` (the model loaded once per process)."""
    if recording.path is None:
        raise RuntimeError(f"recording {recording.id} has no stored file")
    loaded = ctx.models.get(version)
    spec = clip_spec_for(loaded, ctx.settings)
    return Target(recording_id=recording.id, version_id=version.id, class_names=list(version.class_names),
                  video_path=ctx.settings.data_dir / recording.path, started_at=recording.started_at,
                  source_size=(recording.width or 320, recording.height or 240),
                  expected=expected_clips(recording.duration or 0.0, spec), loaded=loaded, spec=spec)


def score_segment(ctx: WorkerContext, target: Target, segment: Segment, lease: JobLease | None,
                  progress_job: int | None) -> list[str]:
    """Score and commit the clips of ``segment`` not committed yet, through the process's batcher; returns the
    decode errors met (the file's problems, kept as the recording's warnings).

    Every ``commit_every`` clips are one transaction: the lease is checked and renewed, the clips go in (ON
    CONFLICT DO NOTHING), and ``progress_job`` (the recording's scoring job) gets the fraction of the recording's
    clips committed so far. Raises LeaseLost (another worker has the job) or ParentClosed (the recording's job
    ended): nothing more is written then.
    """
    with session_scope(ctx.session_factory) as session:
        start = first_missing(session, target, segment)
    if segment.end is not None and start >= segment.end:
        return []
    if start > segment.first:
        log.info("recording %s: segment from clip %d resumes at clip %d", target.recording_id, segment.first, start)
    report = IngestReport()
    clips = _until(iter_clips(target.video_path, target.spec, started_at=target.started_at, report=report,
                              start_index=start), segment.end)
    pending: list[Clip] = []
    run = ScoreRun()  # record_clip's bookkeeping; the rows are what counts
    scored = ctx.batcher().score(target.version_id, target.loaded, clips, tag=target.recording_id)
    with closing(scored):  # a failed commit stops the decode thread at once
        for clip, probs in scored:
            pending.append(record_clip(run, clip, probs, target.recording_id, target.version_id, target.class_names))
            if len(pending) >= ctx.settings.commit_every:
                _commit(ctx, target, pending, lease, progress_job)
    _commit(ctx, target, pending, lease, progress_job)
    return list(report.errors)


def first_missing(session: Session, target: Target, segment: Segment) -> int:
    """The first clip index of ``segment`` not committed yet (clips commit in index order within a segment)."""
    query = select(Clip.index).where(Clip.recording_id == target.recording_id,
                                     Clip.model_version_id == target.version_id, Clip.index >= segment.first)
    if segment.end is not None:
        query = query.where(Clip.index < segment.end)
    expected = segment.first
    for index in session.scalars(query.order_by(Clip.index)):
        if index != expected:
            break
        expected += 1
    return expected


def _until(clips: Iterator[IngestClip], end: int | None) -> Iterator[IngestClip]:
    """The clips before index ``end``; stops right after clip ``end - 1`` without decoding further."""
    try:
        for clip in clips:
            if end is not None and clip.index >= end:
                return
            yield clip
            if end is not None and clip.index >= end - 1:
                return
    finally:
        clips.close()  # type: ignore[attr-defined]


def _commit(ctx: WorkerContext, target: Target, pending: list[Clip], lease: JobLease | None,
            progress_job: int | None) -> None:
    if not pending:
        return
    with session_scope(ctx.session_factory) as session:
        if lease is not None:
            lease.renew(session)
        inserted = commit_clips(session, pending)
        if progress_job is not None:
            done = committed_count(session, target.recording_id, target.version_id)
            if not note_progress(session=session, job_id=progress_job,
                                 progress=min(0.95, done / max(1, target.expected))):
                raise ParentClosed(f"the scoring job {progress_job} of recording {target.recording_id} ended")
    count_clips([len(clip.frame_indices) for clip in pending if clip.index in inserted])
    pending.clear()


def committed_count(session: Session, recording_id: int, version_id: int, segment: Segment | None = None) -> int:
    """Clips of the recording committed by this model version, across all segments (or within ``segment``)."""
    query = select(func.count()).select_from(Clip).where(Clip.recording_id == recording_id,
                                                         Clip.model_version_id == version_id)
    if segment is not None:
        query = query.where(Clip.index >= segment.first)
        if segment.end is not None:
            query = query.where(Clip.index < segment.end)
    return session.scalar(query) or 0


def committed_run(session: Session, recording_id: int, version_id: int, class_names: list[str]) -> ScoreRun:
    """Every committed clip of the recording by this version, in index order, which must be 0..n-1: segments
    cover consecutive ranges, so a hole means a segment lost clips, and the events would be wrong."""
    rows = session.scalars(select(Clip).where(Clip.recording_id == recording_id, Clip.model_version_id == version_id)
                           .order_by(Clip.index)).all()
    indices = [row.index for row in rows]
    if indices != list(range(len(rows))):
        missing = sorted(set(range(max(indices, default=-1) + 1)) - set(indices))
        raise RuntimeError(f"recording {recording_id}: clips {missing[:10]} are missing between the segments")
    run = ScoreRun()
    for row in rows:
        add_row(run, row, class_names)
    return run

