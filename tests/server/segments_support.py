"""Helpers of the segment tests: a recording's full outcome read from the database (every clip column a single pass
fixes, events with their explanation counts), compared between runs; where to cut segments so a boundary falls
inside a detected event."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Clip, Event, EventSource, Explanation, Job

#: stored scores are rounded to 5 decimals; batches of another size move a score by ~1e-7, which may move the
#: rounding by one unit
SCORE_TOLERANCE = 1e-5 + 1e-7


@dataclass(frozen=True)
class Outcome:
    clips: list[tuple]  # (index, start, end, frame_indices, timestamps, scores)
    events: list[tuple]  # (label, start, end, peak_score, peak_time, explanations, has clip, has maps)


def outcome(factory: sessionmaker[Session], recording_id: int) -> Outcome:
    with session_scope(factory) as session:
        clips = session.execute(select(Clip.index, Clip.start, Clip.end, Clip.frame_indices, Clip.timestamps,
                                       Clip.scores).where(Clip.recording_id == recording_id)
                                .order_by(Clip.index)).all()
        explanations = select(func.count()).where(Explanation.event_id == Event.id).scalar_subquery()
        events = session.execute(
            select(Event.label, Event.start, Event.end, Event.peak_score, Event.peak_time, explanations,
                   Event.clip_path.is_not(None), Event.maps_path.is_not(None))
            .where(Event.recording_id == recording_id, Event.source == EventSource.model)
            .order_by(Event.start, Event.label)).all()
    return Outcome([tuple(row) for row in clips], [tuple(row) for row in events])


def assert_same_outcome(mine: Outcome, reference: Outcome) -> None:
    """The same clips (indices, times, frames; scores within rounding) and the same events (label, times,
    explanations exactly; peak score within rounding)."""
    assert len(mine.clips) == len(reference.clips) > 0
    assert [c[:5] for c in mine.clips] == [c[:5] for c in reference.clips]
    for clip, ref in zip(mine.clips, reference.clips, strict=True):
        assert clip[5].keys() == ref[5].keys()
        assert all(abs(clip[5][k] - ref[5][k]) <= SCORE_TOLERANCE for k in ref[5]), (clip[0], clip[5], ref[5])
    assert [(e[0], e[1], e[2], e[4], e[5], e[6], e[7]) for e in mine.events] == [
        (e[0], e[1], e[2], e[4], e[5], e[6], e[7]) for e in reference.events]
    assert all(abs(a[3] - b[3]) <= SCORE_TOLERANCE for a, b in zip(mine.events, reference.events, strict=True))


def boundary_inside_an_event(reference: Outcome) -> tuple[int, float]:
    """A clip index ``b`` such that a detected event of the reference covers clips ``b - 1`` and ``b``: segments of
    ``b`` clips each put a boundary inside that event. Returns (b, the boundary's time)."""
    starts = [c[1] for c in reference.clips]
    best: tuple[int, int, float] | None = None  # (clips in event, b, boundary)
    for _label, start, end, *_ in reference.events:
        inside = [i for i, s in enumerate(starts) if start <= s < end]
        if len(inside) >= 2 and 2 * inside[1] <= len(starts) and (best is None or len(inside) > best[0]):
            best = (len(inside), inside[1], starts[inside[1]])
    assert best is not None, f"no event of two clips or more in the first half: {reference.events}"
    return best[1], best[2]


def jobs_of(factory: sessionmaker[Session], recording_id: int) -> list[Job]:
    with session_scope(factory) as session:
        return list(session.scalars(select(Job).where(Job.recording_id == recording_id).order_by(Job.id)))


def row_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with session_scope(factory) as session:
        return {table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
                for table in (Clip, Event, Explanation, Job)}
