"""The review history of events: one row per clinician decision, never rewritten (migration 0004).

Why a history table, when ``event`` already has status / label / note / reviewer columns: a later review used
to overwrite an earlier one, so nobody could tell what was decided before, undo a mistaken click, or audit a
change of mind. The event's columns stay (the queue filters on them), as a copy of the latest review that is
not undone (``server.services.reviews`` keeps them equal).

Undo marks the review (``undone_at``, ``undone_by``) instead of appending an "undo" row: the current state is
then simply the newest row with ``undone_at IS NULL`` (one indexed query, no replaying a stack of undos and
undos of undos), and the history still shows every decision, and which were taken back, when and by whom.
A database trigger (migration 0004) refuses every UPDATE except that one mark, once; rows go only with their
event (ON DELETE CASCADE, when a recording is rescored). The audit log keeps its own record of each review and
undo either way.

Like ``audit_log``, the user and token ids have no foreign keys on purpose: a row records who reviewed at the
time (with the username), and nothing done to accounts may change or block it.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class ReviewDecision(enum.StrEnum):
    confirmed = "confirmed"
    rejected = "rejected"
    relabelled = "relabelled"


class EventReview(Base):
    """One decision on one event: who, which decision, the new label (relabels only), the note, when; and,
    if it was taken back, when and by whom."""

    __tablename__ = "event_review"
    __table_args__ = (Index("ix_event_review_event_id_id", "event_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"))
    decision: Mapped[ReviewDecision] = mapped_column(
        Enum(ReviewDecision, name="review_decision", native_enum=False, length=16, validate_strings=True))
    label: Mapped[str | None] = mapped_column(String(64), doc="the new label of a relabel; None otherwise")
    note: Mapped[str | None] = mapped_column(Text)
    reviewer_id: Mapped[int | None] = mapped_column(doc="app_user.id at the time; None for a backfilled row "
                                                        "whose reviewer had no account")
    reviewer: Mapped[str] = mapped_column(String(128), doc="the reviewer's username at the time")
    token_id: Mapped[int | None] = mapped_column(doc="the API token it came through; None: a browser session")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]
    undone_by_id: Mapped[int | None]
    undone_by: Mapped[str | None] = mapped_column(String(128))
