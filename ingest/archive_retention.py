"""Bounded disk for a stream archive: which segments may be removed, and removing them.

The policy is an age and a size per stream. What must be kept whatever the policy says comes from the caller
(the server knows which events still need their video): spans of recording seconds that are *held*, and a
``hold_from`` second after which everything is held (a live reader's events that are still open). The segment
being written is never removed. Removed spans stay in the index, merged, so a later read of them says the video
was removed by retention rather than that it never existed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.archive import ArchiveIndex, RemovedSpan, Segment, locked, read_index, write_index

log = logging.getLogger(__name__)

__all__ = ["Removal", "RetentionPolicy", "apply_retention", "plan_removal"]


@dataclass(frozen=True)
class RetentionPolicy:
    """``max_age``: segments that ended longer ago than this go; ``max_bytes``: the oldest go while the archive is
    larger. None: no limit of that kind."""

    max_age: timedelta | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Removal:
    """What one retention pass removed, and what the archive holds after it."""

    removed: list[Segment] = field(default_factory=list)
    removed_bytes: int = 0
    kept_bytes: int = 0
    #: the archive is still over ``max_bytes``: the rest is held by events (or being written)
    over_limit: bool = False


def plan_removal(index: ArchiveIndex, policy: RetentionPolicy, *, now: datetime,
                 held: Sequence[tuple[float, float]] = (), hold_from: float | None = None) -> list[tuple[Segment, str]]:
    """The segments the policy removes, oldest first, each with the reason (pure: nothing is touched)."""
    def removable(segment: Segment) -> bool:
        if not segment.closed:
            return False
        if hold_from is not None and segment.span_end > hold_from:
            return False
        return not any(segment.overlaps(a, b) for a, b in held)

    candidates = [s for s in index.segments if removable(s)]
    chosen: dict[int, str] = {}
    if policy.max_age is not None:
        limit = now - policy.max_age
        for segment in candidates:
            ended = _ended_at(segment)
            if ended is not None and ended < limit:
                chosen[segment.seq] = f"retention: older than {_hours(policy.max_age)}"
    if policy.max_bytes is not None:
        total = index.bytes - sum(s.bytes for s in candidates if s.seq in chosen)
        for segment in candidates:
            if total <= policy.max_bytes:
                break
            if segment.seq not in chosen:
                chosen[segment.seq] = f"retention: the archive was over {policy.max_bytes} bytes"
                total -= segment.bytes
    return [(s, chosen[s.seq]) for s in candidates if s.seq in chosen]


def apply_retention(directory: str | os.PathLike[str], policy: RetentionPolicy, *, now: datetime | None = None,
                    held: Sequence[tuple[float, float]] = (), hold_from: float | None = None) -> Removal:
    """Remove what :func:`plan_removal` chooses: files first, then the index (rewritten under the lock)."""
    folder = Path(directory)
    if not (folder / "index.jsonl").is_file():
        return Removal()
    now = now or datetime.now(UTC)
    with locked(folder):
        index = read_index(folder)
        plan = plan_removal(index, policy, now=now, held=held, hold_from=hold_from)
        if not plan:
            over = policy.max_bytes is not None and index.bytes > policy.max_bytes
            return Removal(kept_bytes=index.bytes, over_limit=over)
        gone = {s.seq for s, _ in plan}
        for segment, _ in plan:
            (folder / segment.file).unlink(missing_ok=True)
        kept = [s for s in index.segments if s.seq not in gone]
        spans = [RemovedSpan(s.start, s.span_end, reason) for s, reason in plan]
        updated = replace(index, segments=kept, removed=_merge(index.removed + spans, kept),
                          last_removed_seq=max(index.last_removed_seq, *gone))
        write_index(folder, updated)
    removed = [s for s, _ in plan]
    kept_bytes = sum(s.bytes for s in kept)
    over = policy.max_bytes is not None and kept_bytes > policy.max_bytes
    log.info("%s: retention removed %d segment(s), %d bytes; %d bytes kept", folder, len(removed),
             sum(s.bytes for s in removed), kept_bytes)
    if over:  # info, not warning: a long unreviewed event keeps it over at every pass
        log.info("%s: the archive holds %d bytes, over its limit of %d: the rest is needed by events", folder,
                    kept_bytes, policy.max_bytes)
    return Removal(removed, sum(s.bytes for s in removed), kept_bytes, over)


def _merge(spans: list[RemovedSpan], kept: list[Segment]) -> list[RemovedSpan]:
    """Join removed spans of the same kind (retention, or another reason) that no kept segment separates: the index
    stays small however long the stream runs."""
    def kind(span: RemovedSpan) -> str:
        return "retention" if span.reason.startswith("retention") else span.reason

    merged: list[RemovedSpan] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if merged and kind(merged[-1]) == kind(span) and \
                not any(merged[-1].end <= s.start < span.start + 1e-9 for s in kept):
            last = merged[-1]
            reason = last.reason if last.reason == span.reason else "retention"
            merged[-1] = RemovedSpan(last.start, max(last.end, span.end), reason, last.segments + span.segments)
        else:
            merged.append(span)
    return merged


def _ended_at(segment: Segment) -> datetime | None:
    if segment.end_wall is None:
        return None
    ended = datetime.fromisoformat(segment.end_wall)
    return ended if ended.tzinfo is not None else ended.replace(tzinfo=UTC)


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:g} h"
