"""event.media_error: why an event has no review clip or explanations when its source could not give them

Live streams are archived to disk now (docs/streams.md), so their events get review clips cut from the archive,
after the event is stored (once the segments holding its window are closed). When that fails (a segment corrupt,
truncated, missing or already removed), or the frames an event needs to be explained are gone, the reason is kept
on the event instead of the event being lost or showing nothing. Nullable: no error for every existing row.

Revision ID: 0013_stream_archive
Revises: 0012_brokers
Create Date: 2026-12-07 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_stream_archive"
down_revision: str | None = "0012_brokers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("media_error", sa.Text(), nullable=True))


def downgrade() -> None:
    # in place, as 0009b: a batch copy of "event" would cascade-delete its reviews and explanations on SQLite
    op.drop_column("event", "media_error")
