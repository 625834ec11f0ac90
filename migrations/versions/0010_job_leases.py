"""job.attempts, job.lease_owner, job.lease_expires_at: leases so a dead worker's job is noticed

A job that was running when its process died stayed ``running`` forever beside the job that replaced it. A
running job now holds a lease renewed by a heartbeat; the sweeper re-queues (or, after the bounded attempts,
fails) a job whose lease expired. Existing rows: no lease (a running one is taken as expired), 0 attempts.

Revision ID: 0010
Revises: 0009b
Create Date: 2026-12-01 21:15:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0010"
down_revision: str | None = "0009b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", server.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_job_status_lease", ["status", "lease_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_status_lease")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("attempts")
