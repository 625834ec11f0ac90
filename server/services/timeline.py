"""A recording's timeline: per-class clip scores bucketed over a time range, its events, live-stream gaps.

Built for long recordings (a day of video is ~43,000 clips of 2 s): only the three needed columns of the clip
rows are selected, as plain tuples (no ORM objects), and the bucketing is vectorised with numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.tables import Clip, Event, Job, ModelVersion, Recording
from server.schemas import TimelineEventPublic, TimelinePublic
from server.services.errors import InvalidInputError
from server.services.models import get_active_model
from server.services.recordings import get_recording
from server.services.streams import STREAM_KIND

#: what ``server.worker.streaming`` writes into the recording's warnings for each outage
_GAP_WARNING = re.compile(r"^stream gap (\d+(?:\.\d+)?)-(\d+(?:\.\d+)?) s$")


def bucket_max(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, start: float, end: float,
               points: int) -> np.ndarray:
    """The largest of ``values`` ``[n, k]`` over the clips ``[starts, ends)`` overlapping each of ``points`` equal
    buckets of ``[start, end]``: ``[points, k]``, NaN where no clip overlaps a bucket.

    A clip counts in every bucket it overlaps (so zooming in never leaves holes between clips).
    """
    if starts.size == 0 or end <= start:
        return np.full((points, values.shape[1]), np.nan)
    width = (end - start) / points
    first = np.clip(np.floor((starts - start) / width), 0, points - 1).astype(np.int64)
    last = np.clip(np.ceil((ends - start) / width) - 1, 0, points - 1).astype(np.int64)
    last = np.maximum(last, first)
    counts = last - first + 1
    rows = np.repeat(np.arange(starts.size), counts)
    # bucket of each (clip, covered bucket) pair: the clip's first bucket plus its offset within the run
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    buckets = first[rows] + offsets
    filled = np.full((points, values.shape[1]), -np.inf)
    np.fmax.at(filled, buckets, values[rows])  # fmax: a clip without a score for a class does not blank others
    return np.where(np.isneginf(filled), np.nan, filled)


def _scored_version(session: Session, recording_id: int) -> ModelVersion | None:
    """The model version whose clips the timeline shows: the active one if it scored the recording, else the
    newest that did."""
    active = get_active_model(session=session)
    if active is not None and session.scalar(select(Clip.id).where(
            Clip.recording_id == recording_id, Clip.model_version_id == active.id).limit(1)) is not None:
        return active
    newest = session.scalar(select(func.max(Clip.model_version_id)).where(Clip.recording_id == recording_id))
    return session.get(ModelVersion, newest) if newest is not None else active


def stream_gaps(session: Session, recording: Recording) -> list[tuple[float, float]]:
    """Outages of the recording's live stream: exact from the finished stream jobs, else (a job still running
    or from before) read back from the recording's warnings."""
    gaps: list[tuple[float, float]] = []
    results = session.scalars(select(Job.result).where(Job.recording_id == recording.id,
                                                       Job.kind == STREAM_KIND)).all()
    for result in results:
        for gap in (result or {}).get("gaps") or []:
            if isinstance(gap, Sequence) and len(gap) == 2:
                gaps.append((float(gap[0]), float(gap[1])))
    if not gaps:
        for warning in recording.warnings or []:
            if isinstance(warning, str) and (match := _GAP_WARNING.match(warning)):
                gaps.append((float(match[1]), float(match[2])))
    return sorted(set(gaps))


def _source(event: Event) -> str:
    """``model`` or ``clinician`` (a clinician-added event has its own source column where that exists)."""
    source = getattr(event, "source", None)
    return str(getattr(source, "value", source)) if source is not None else "model"


def recording_timeline(*, session: Session, recording_id: int, start: float | None = None,
                       end: float | None = None, points: int = 600) -> TimelinePublic:
    """The timeline of ``[start, end]`` (default: the whole recording) in ``points`` buckets.

    ``end`` past the recording's end is clamped to it; a range that is empty, or starts at or after the end
    of a recording with any duration, is refused (InvalidInputError, 422).
    """
    recording = get_recording(session=session, recording_id=recording_id)
    version = _scored_version(session, recording_id)
    version_id = version.id if version is not None else None
    # the last clip by index (the unique index's order) rather than max(end) over every clip
    last_clip = session.scalar(select(Clip.end).where(Clip.recording_id == recording_id,
                                                      Clip.model_version_id == version_id)
                               .order_by(Clip.index.desc()).limit(1))
    duration = max(float(recording.duration or 0.0), float(last_clip or 0.0))
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else min(float(end), duration)
    if start is not None and duration > 0 and lo >= duration:
        raise InvalidInputError(f"start {lo:g} s is at or past the end of the recording ({duration:g} s)")
    if (start is not None or end is not None) and not hi > lo:
        raise InvalidInputError(f"the range {lo:g}-{hi:g} s is empty: need start < end within 0-{duration:g} s")
    classes = [str(c) for c in version.class_names] if version is not None else []
    # the scores are read out of the JSON column by the database (json_extract / ->>), through the Core
    # connection: no ORM rows and no JSON parsing in Python for each of tens of thousands of clips
    columns = [Clip.start, Clip.end, *(Clip.scores[name].as_float() for name in classes)]
    rows = session.connection().execute(
        select(*columns).where(Clip.recording_id == recording_id, Clip.model_version_id == version_id,
                               Clip.end > lo, Clip.start < hi)
    ).all() if hi > lo else []
    # a missing score is NaN; tuples, not Row objects, for numpy's sake (10x faster)
    table_in = np.array([tuple(row) for row in rows], dtype=np.float64).reshape(len(rows), 2 + len(classes))
    starts, ends, values = table_in[:, 0], table_in[:, 1], table_in[:, 2:]
    n = points if hi > lo else 0
    table = bucket_max(starts, ends, values, lo, hi, n) if n else np.zeros((0, len(classes)))
    width = (hi - lo) / n if n else 0.0
    events = session.scalars(select(Event).where(Event.recording_id == recording_id, Event.start <= hi,
                                                 Event.end >= lo).order_by(Event.start, Event.id)).all()
    return TimelinePublic(
        recording_id=recording_id, duration=duration, start=lo, end=hi, classes=classes,
        times=[round(lo + (i + 0.5) * width, 6) for i in range(n)],
        scores={name: [None if math.isnan(v) else round(float(v), 5) for v in table[:, k]]
                for k, name in enumerate(classes)},
        events=[TimelineEventPublic(id=e.id, label=e.label, reviewed_label=e.reviewed_label, status=e.status,
                                    source=_source(e), start=e.start, end=e.end, peak_score=e.peak_score)
                for e in events],
        gaps=[(a, b) for a, b in stream_gaps(session, recording) if a <= hi and b >= lo],
    )

