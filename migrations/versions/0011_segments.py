"""Segment jobs and idempotency by constraint: job.parent_id / job.segment, unique clips by start, unique model
events

A long recording is scored as segment jobs (children of its scoring job, one per ``segment`` number, unique per
parent). Clips are also unique by (recording, model version, start), and model events by (recording, model
version, label, start): both are inserted with ON CONFLICT DO NOTHING, so a duplicate task or a second
finalisation adds no row. The event index is partial (``source = 'model'``): clinicians' marks may repeat.

Indexes are created in place (no batch copy of ``clip`` or ``event``: on SQLite a copy drops the table, and
the drop would cascade to explanations and reviews). ``job`` is copied by the batch (nothing references it).

Revision ID: 0011_segments
Revises: 0010
Create Date: 2026-12-02 00:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_segments"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODEL_ONLY = sa.text("source = 'model'")


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("segment", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_job_parent_id_job"), "job", ["parent_id"], ["id"],
                                    ondelete="CASCADE")
        batch_op.create_index("uq_job_parent_segment", ["parent_id", "segment"], unique=True)
    op.create_index("uq_clip_recording_version_start", "clip", ["recording_id", "model_version_id", "start"],
                    unique=True)
    op.create_index("uq_event_model_run", "event", ["recording_id", "model_version_id", "label", "start"],
                    unique=True, sqlite_where=MODEL_ONLY, postgresql_where=MODEL_ONLY)


def downgrade() -> None:
    op.drop_index("uq_event_model_run", table_name="event")
    op.drop_index("uq_clip_recording_version_start", table_name="clip")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("uq_job_parent_segment")
        batch_op.drop_constraint(batch_op.f("fk_job_parent_id_job"), type_="foreignkey")
        batch_op.drop_column("segment")
        batch_op.drop_column("parent_id")
