"""event.clip_start and event.maps_path: what the browser needs to draw explanations over the playing clip

``clip_start`` is the recording second at the review clip's 0 s: the clip starts a few seconds before the event
(on a source frame, not exactly at ``start - pre``), and the per-frame maps are in recording time.
``maps_path`` is the event's per-frame explanation maps (``maps.npz``, relative to the data directory), like
the other media paths. Both nullable: events scored before this revision, live-stream events (no clip) and
clinician-added events (no maps) have none.

Revision ID: 0009b
Revises: 0009
Create Date: 2026-12-01 21:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009b"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clip_start", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("maps_path", sa.Text(), nullable=True))


def downgrade() -> None:
    # in place (SQLite 3.35+ drops a column without copying the table): a batch copy of "event" would cascade-
    # delete its reviews and explanations on SQLite (as migration 0009 notes)
    op.drop_column("event", "maps_path")
    op.drop_column("event", "clip_start")
