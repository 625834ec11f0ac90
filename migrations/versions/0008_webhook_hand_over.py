"""webhook_delivery.handed_over_at: when a sweeper last queued the delivery

The sweeper used to queue every due delivery on every pass (30 s), so while the webhook workers were stuck the
executor queue or the broker grew by the whole backlog each time. A sweeper now queues a delivery only if no
sweeper has done so within a claim lease, and records when it did here. Nullable: existing rows count as never
handed over.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-04 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_over_at", server.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("handed_over_at")
