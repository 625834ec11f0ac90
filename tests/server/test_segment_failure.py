"""A failing segment writes its failure only while the segment is its worker's, in one transaction with its
recording's scoring job and the recording."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sqlalchemy.orm import Session, sessionmaker

from server.db.session import session_scope
from server.db.tables import Job, JobStatus, Recording, RecordingStatus
from server.services import jobs
from server.services.recordings import create_recording
from server.worker.scoring import _fail


def _waiting_recording(factory: sessionmaker[Session]) -> tuple[int, int, int, int]:
    """A recording whose scoring job waits on two segments: A running (owned by ``host:1:OLD``), B queued."""
    with session_scope(factory) as session:
        recording = create_recording(session=session, source="r.mp4")
        recording.status = RecordingStatus.ingesting
        parent = jobs.create_job(session=session, kind=jobs.JobKind.score, recording_id=recording.id)
        ids = (recording.id, parent.id)
    with session_scope(factory) as session:
        jobs.start_job(session=session, job_id=ids[1], owner="host:1:PARENT", lease_seconds=30)
        for number in (0, 1):
            session.add(Job(kind="segment", status=JobStatus.queued, recording_id=ids[0], parent_id=ids[1],
                            segment=number, params={}))
        session.flush()
        jobs.wait_for_children(session=session, job_id=ids[1], owner="host:1:PARENT")
        a, b = (j.id for j in jobs.children(session=session, parent_id=ids[1]))
    with session_scope(factory) as session:
        jobs.start_job(session=session, job_id=a, owner="host:1:OLD", lease_seconds=30)
    return ids[0], ids[1], a, b


def _states(factory: sessionmaker[Session], recording_id: int, *job_ids: int) -> tuple:  # type: ignore[type-arg]
    with session_scope(factory) as session:
        recording = session.get(Recording, recording_id)
        return (recording.status, *(session.get(Job, j).status for j in job_ids))


def test_a_segment_no_longer_its_workers_writes_nothing(factory: sessionmaker[Session]) -> None:
    recording, parent, a, b = _waiting_recording(factory)
    with session_scope(factory) as session:  # the sweeper handed segment A on: another worker owns it now
        session.get(Job, a).lease_owner = "host:2:NEW"
    _fail(SimpleNamespace(session_factory=factory), recording, a, "host:1:OLD", "boom")  # type: ignore[arg-type]
    assert _states(factory, recording, parent, a, b) == (
        RecordingStatus.ingesting, JobStatus.running, JobStatus.running, JobStatus.queued)


def test_a_failed_segment_fails_its_recording_and_stops_the_others(factory: sessionmaker[Session]) -> None:
    recording, parent, a, b = _waiting_recording(factory)
    _fail(SimpleNamespace(session_factory=factory), recording, a, "host:1:OLD", "boom")  # type: ignore[arg-type]
    assert _states(factory, recording, parent, a, b) == (
        RecordingStatus.failed, JobStatus.failed, JobStatus.failed, JobStatus.cancelled)


def test_a_parent_being_finalised_is_left_to_its_finaliser(factory: sessionmaker[Session], tmp_path: Path) -> None:
    recording, parent, a, b = _waiting_recording(factory)
    with session_scope(factory) as session:  # a finaliser holds the scoring job
        session.get(Job, parent).lease_owner = "host:3:FINALISER"
    _fail(SimpleNamespace(session_factory=factory), recording, a, "host:1:OLD", "boom")  # type: ignore[arg-type]
    assert _states(factory, recording, parent, a, b) == (
        RecordingStatus.ingesting, JobStatus.running, JobStatus.failed, JobStatus.queued)
