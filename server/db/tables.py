"""Typed tables: recording, clip, event, explanation, model_version, job (DESIGN.md's first-cut data model),
plus the access-control tables of `server.db.access_tables` and the review history of
`server.db.review_tables`."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.access_tables import BigId
from server.db.base import Base, utcnow


class RecordingStatus(enum.StrEnum):
    pending = "pending"
    queued = "queued"
    ingesting = "ingesting"
    scored = "scored"
    failed = "failed"


class EventStatus(enum.StrEnum):
    flagged = "flagged"
    confirmed = "confirmed"
    rejected = "rejected"
    relabelled = "relabelled"


class EventSource(enum.StrEnum):
    """Who found the event: the model flagged it, or a clinician marked what the model missed (migration 0009)."""

    model = "model"
    clinician = "clinician"


class ModelState(enum.StrEnum):
    candidate = "candidate"
    active = "active"
    retired = "retired"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as strings (no native enum types) so adding a value never needs an ALTER TYPE.
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class ModelVersion(Base):
    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    architecture: Mapped[str] = mapped_column(String(32))
    class_names: Mapped[list[Any]]
    input_spec: Mapped[dict[str, Any]]
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    state: Mapped[ModelState] = mapped_column(_enum(ModelState, "model_state"), default=ModelState.candidate)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Recording(Base):
    __tablename__ = "recording"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text, doc="original file name or stream URL")
    path: Mapped[str | None] = mapped_column(Text, doc="stored file, relative to the data directory")
    room: Mapped[str | None] = mapped_column(String(128))
    patient_ref: Mapped[str | None] = mapped_column(String(128), doc="pseudonymous ID, never a name")
    started_at: Mapped[datetime | None]
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    codec: Mapped[str | None] = mapped_column(String(32))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[RecordingStatus] = mapped_column(
        _enum(RecordingStatus, "recording_status"), default=RecordingStatus.pending, index=True
    )
    error: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    clip_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    events: Mapped[list[Event]] = relationship(back_populates="recording")


class Clip(Base):
    __tablename__ = "clip"
    # One row per clip of a recording and model version, by index and by start (migration 0011): clips are
    # inserted with ON CONFLICT DO NOTHING, so a re-run, an overlapping segment or a duplicate task adds nothing.
    __table_args__ = (
        UniqueConstraint("recording_id", "index", "model_version_id"),
        Index("uq_clip_recording_version_start", "recording_id", "model_version_id", "start", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"), index=True)
    index: Mapped[int]
    start: Mapped[float] = mapped_column(Float, doc="seconds from recording start")
    end: Mapped[float] = mapped_column(Float)
    start_wall: Mapped[datetime | None]
    end_wall: Mapped[datetime | None]
    frame_indices: Mapped[list[Any]]
    timestamps: Mapped[list[Any]] = mapped_column(doc="seconds of each sampled frame, to re-read them exactly")
    scores: Mapped[dict[str, Any]] = mapped_column(doc="label -> probability")
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))


class Event(Base):
    __tablename__ = "event"
    # The queue's keyset orders (``server.services.event_queue``): each sort key ends in the id, and the filters
    # the review page uses most lead (migration 0009 says why these, from EXPLAIN ANALYZE at 100,000 events).
    __table_args__ = (
        Index("ix_event_recording_label", "recording_id", "label"),
        Index("ix_event_start_wall_id", "start_wall", "id"),
        Index("ix_event_peak_score_id", "peak_score", "id"),
        Index("ix_event_status_start_wall_id", "status", "start_wall", "id"),
        Index("ix_event_status_peak_score_id", "status", "peak_score", "id"),
        Index("ix_event_source_start_wall_id", "source", "start_wall", "id"),
        # A model version flags an event of a label at a start once per recording (migration 0011): event rows
        # are inserted with ON CONFLICT DO NOTHING, so a second finalisation stores nothing. Clinicians' marks
        # are not the model's and may repeat.
        Index("uq_event_model_run", "recording_id", "model_version_id", "label", "start", unique=True,
              sqlite_where=text("source = 'model'"), postgresql_where=text("source = 'model'")),
        # label + time range: the page in order, and its per-status counts from the index alone (migration 0014)
        Index("ix_event_label_start_wall_id_status", "label", "start_wall", "id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(64))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    start_wall: Mapped[datetime | None]
    end_wall: Mapped[datetime | None]
    peak_score: Mapped[float] = mapped_column(Float)
    peak_time: Mapped[float] = mapped_column(Float)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    source: Mapped[EventSource] = mapped_column(
        _enum(EventSource, "event_source"),
        default=EventSource.model, server_default=EventSource.model.value,
        doc="model: flagged by the model version named; clinician: marked by a clinician (that version's classes)",
    )
    status: Mapped[EventStatus] = mapped_column(
        _enum(EventStatus, "event_status"), default=EventStatus.flagged, index=True
    )
    reviewer: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    reviewed_label: Mapped[str | None] = mapped_column(String(64))
    key_frame_time: Mapped[float | None] = mapped_column(Float)
    key_frame_path: Mapped[str | None] = mapped_column(Text)
    clip_path: Mapped[str | None] = mapped_column(Text, doc="browser-playable review clip, relative")
    clip_start: Mapped[float | None] = mapped_column(Float, doc="recording seconds at the review clip's 0 s")
    maps_path: Mapped[str | None] = mapped_column(Text, doc="per-frame explanation maps (maps.npz), relative")
    media_error: Mapped[str | None] = mapped_column(
        Text, doc="why the review clip or explanations are missing (a live stream's archive could not give them)")
    agreement: Mapped[float | None] = mapped_column(
        Float, doc="the explanations' ATCON agreement (the first, by id, that has one), kept by database triggers "
                   "on explanation (migration 0014): the queue shows it without loading them. Written by the "
                   "database, so an Event loaded before its explanations were flushed needs a refresh to see it")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    recording: Mapped[Recording] = relationship(back_populates="events")
    explanations: Mapped[list[Explanation]] = relationship(
        back_populates="event", cascade="all, delete-orphan", order_by="Explanation.id"
    )


class Explanation(Base):
    __tablename__ = "explanation"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    key_frame_time: Mapped[float] = mapped_column(Float)
    overlay_path: Mapped[str] = mapped_column(Text, doc="PNG, relative to the data directory")
    video_path: Mapped[str | None] = mapped_column(Text, doc="per-frame overlay MP4, relative")
    agreement: Mapped[float | None] = mapped_column(Float, doc="ATCON similarity of coarse and fine maps")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    event: Mapped[Event] = relationship(back_populates="explanations")


class EventStatusDelta(Base):
    """Changes to the number of events per status, written by database triggers on ``event`` (insert, delete, a
    status change; migration 0014) and folded together now and then: the sum per status is the queue's
    unfiltered counts without counting 100,000 rows on every request (``server.services.event_counts``).

    Append-only deltas, never a counter row updated in place: concurrent reviews would queue on that row's lock
    (and could deadlock against a recording's cascading delete).
    """

    __tablename__ = "event_status_delta"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigInteger)


class Job(Base):
    """A unit of work; its state changes only through ``server.services.jobs`` (the state machine lives there).

    A running job holds a lease: ``lease_owner`` (host:pid:run) renews ``lease_expires_at`` by a heartbeat, so a
    job whose owner died is found by its expired lease, not left ``running`` forever; ``attempts`` counts starts
    and bounds how often a job that kills its worker is re-queued.

    A long recording's scoring job is split into *segment* jobs (``parent_id`` = the scoring job, ``segment`` =
    its number, unique per parent: planning twice adds none), each leased and handed on like any job.
    """

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_status_lease", "status", "lease_expires_at"),
        Index("uq_job_parent_segment", "parent_id", "segment", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), doc="a server.services.jobs.JobKind value")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    celery_id: Mapped[str | None] = mapped_column(String(64))
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recording.id", ondelete="SET NULL"))
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    # Hand-overs to the broker (``note_task_id``): when the last one was and how many there were, so the sweeper
    # re-sends a queued job whose message may be lost at most once per ``job_redispatch_seconds``, boundedly.
    dispatched_at: Mapped[datetime | None]
    dispatch_count: Mapped[int] = mapped_column(default=0, server_default="0")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    segment: Mapped[int | None] = mapped_column(doc="a segment job's number within its parent (0, 1, ...)")


# Access control and audit tables live in their own module; re-exported so `server.db.tables` registers them all.
from server.db.access_tables import (  # noqa: E402
    ApiToken,
    AuditLog,
    AuthEpoch,
    LoginAttempt,
    Outcome,
    Role,
    User,
    UserSession,
)
from server.db.review_tables import EventReview, ReviewDecision  # noqa: E402
from server.db.webhook_tables import WebhookAttempt, WebhookDelivery, WebhookSubscription  # noqa: E402

__all__ = [
    "ApiToken", "AuditLog", "AuthEpoch", "Clip", "Event", "EventReview", "EventStatus", "EventStatusDelta",
    "Explanation", "Job", "JobStatus",
    "LoginAttempt", "ModelState", "ModelVersion", "Outcome", "Recording", "RecordingStatus", "ReviewDecision", "Role",
    "User", "UserSession", "WebhookAttempt", "WebhookDelivery", "WebhookSubscription",
]
