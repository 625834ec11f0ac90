"""event.source (model / clinician) and the review queue's keyset indexes

``source``: events a clinician marks on a recording (what the model missed) are stored beside the model's
flags; existing rows are the model's (server default ``model``).

Indexes for ``GET /events`` (keyset pagination, ``server.services.event_queue``), chosen with EXPLAIN ANALYZE
on PostgreSQL at 100,000 events (docs/queue.md has the plans and timings): every sort key ends in the id, so
a page after a cursor is an index range scan that starts at the cursor and reads one page, however deep.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_INDEXES = {
    "ix_event_start_wall_id": ["start_wall", "id"],
    "ix_event_peak_score_id": ["peak_score", "id"],
    "ix_event_status_start_wall_id": ["status", "start_wall", "id"],
    "ix_event_status_peak_score_id": ["status", "peak_score", "id"],
    "ix_event_source_start_wall_id": ["source", "start_wall", "id"],
}


def upgrade() -> None:
    # ADD COLUMN in place, never a batch table copy: on SQLite a copy drops and recreates ``event``, and the
    # DROP would cascade to the review history and explanations (foreign keys are on). Hence no CHECK either
    # (SQLite cannot add one in place); like the other enum columns, the ORM refuses other values.
    op.add_column("event", sa.Column(
        "source", sa.Enum("model", "clinician", name="event_source", native_enum=False, length=16),
        server_default="model", nullable=False))
    for name, columns in EVENT_INDEXES.items():
        op.create_index(name, "event", columns, unique=False)


def downgrade() -> None:
    for name in reversed(EVENT_INDEXES):
        op.drop_index(name, table_name="event")
    op.drop_column("event", "source")  # SQLite 3.35+ drops a column in place (no copy: see upgrade)
