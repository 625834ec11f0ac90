"""Idempotent by constraint (migration 0011): clip and model-event rows are inserted with ON CONFLICT DO NOTHING
against unique indexes, so writing the same rows again -- a duplicate task, a retried batch, a second
finalisation -- adds nothing, on SQLite and on PostgreSQL. Rows are counted in the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from model.events import DetectedEvent
from server.db.session import session_scope
from server.db.tables import Clip, Event, EventSource, Job, ModelVersion, Recording
from server.pipeline import commit_clips, insert_event
from server.services.jobs import JobKind, create_job


def _recording_and_version(factory: sessionmaker[Session]) -> tuple[int, int]:
    with session_scope(factory) as session:
        recording = Recording(source="r.mp4")
        version = ModelVersion(name="m", architecture="tiny3d", class_names=["fall"], input_spec={},
                               checkpoint_path="m.pt", checkpoint_sha256="sha-idempotent")
        session.add_all([recording, version])
        session.flush()
        return recording.id, version.id


def _clip(recording_id: int, version_id: int, index: int, start: float | None = None) -> Clip:
    start = 2.0 * index if start is None else start
    return Clip(recording_id=recording_id, index=index, start=start, end=start + 2.0, frame_indices=[index],
                timestamps=[start], scores={"fall": 0.1 * index}, model_version_id=version_id)


def _count(factory: sessionmaker[Session], table: type) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_clips_written_twice_are_stored_once(factory: sessionmaker[Session]) -> None:
    recording_id, version_id = _recording_and_version(factory)
    with session_scope(factory) as session:
        assert commit_clips(session, [_clip(recording_id, version_id, i) for i in range(4)]) == {0, 1, 2, 3}
    with session_scope(factory) as session:  # the same batch again, and one overlapping it
        assert commit_clips(session, [_clip(recording_id, version_id, i) for i in range(4)]) == set()
        assert commit_clips(session, [_clip(recording_id, version_id, i) for i in range(2, 6)]) == {4, 5}
    with session_scope(factory) as session:  # the same start under another index: the start is unique too
        assert commit_clips(session, [_clip(recording_id, version_id, 9, start=0.0)]) == set()
    assert _count(factory, Clip) == 6


def test_a_model_event_is_stored_once_a_clinicians_mark_may_repeat(factory: sessionmaker[Session]) -> None:
    recording_id, version_id = _recording_and_version(factory)
    found = DetectedEvent(label="fall", start=4.0, end=8.0, peak_score=0.9, peak_time=5.0, clip_indices=[2, 3])
    with session_scope(factory) as session:
        first = insert_event(session, recording_id, version_id, found, None)
        assert first is not None and first.id is not None and first.source == EventSource.model
    with session_scope(factory) as session:
        assert insert_event(session, recording_id, version_id, found, None) is None
        other = DetectedEvent(label="fall", start=10.0, end=12.0, peak_score=0.8, peak_time=11.0, clip_indices=[5])
        assert insert_event(session, recording_id, version_id, other, None) is not None
        for _ in range(2):  # a clinician's marks are not the model's run: the same range twice is allowed
            session.add(Event(recording_id=recording_id, label="fall", start=4.0, end=8.0, peak_score=1.0,
                              peak_time=6.0, model_version_id=version_id, source=EventSource.clinician))
    assert _count(factory, Event) == 4
    with pytest.raises(IntegrityError), session_scope(factory) as session:  # a plain INSERT is refused
        session.add(Event(recording_id=recording_id, label="fall", start=4.0, end=8.0, peak_score=0.9,
                          peak_time=5.0, model_version_id=version_id))
    assert _count(factory, Event) == 4


def test_a_segment_is_planned_once_per_parent(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        parent = create_job(session=session, kind=JobKind.score)
        session.add(Job(kind=JobKind.segment.value, parent_id=parent.id, segment=0))
        parent_id = parent.id
    with pytest.raises(IntegrityError), session_scope(factory) as session:
        session.add(Job(kind=JobKind.segment.value, parent_id=parent_id, segment=0))
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.parent_id == parent_id)) == 1
