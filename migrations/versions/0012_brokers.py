"""job.dispatched_at, job.dispatch_count: re-sending queued jobs whose broker message may be lost

The broker only carries job IDs; a broker restarted without its data (or a send while it was down) leaves a job
``queued`` with no message anywhere. The job sweeper re-sends such jobs; these columns say when a job was last
handed to the broker and how often, so a re-send happens at most once per interval and a bounded number of
times. Existing rows: never noted (the job's created_at stands in), 0 hand-overs.

Revision ID: 0012_brokers
Revises: 0011_segments
Create Date: 2026-12-07 00:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0012_brokers"
down_revision: str | None = "0011_segments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", server.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dispatch_count", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("dispatch_count")
        batch_op.drop_column("dispatched_at")
