"""event review history

Every review of an event becomes a row of ``event_review`` instead of overwriting the event's columns (which
stay, as a copy of the latest review that is not undone: the queue filters on them). Already-reviewed events
get one row each, from what their columns hold (the earlier decisions were overwritten and are gone; the audit
log still names them). A trigger keeps decisions as they were written: the only UPDATE allowed on a row is
marking it undone, once (SQLite and PostgreSQL). Downgrading drops the history; the events keep their latest
state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 09:12:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns a review keeps as written; only undone_at / undone_by_id / undone_by may be set, and only once.
_FIXED = ("id", "event_id", "decision", "label", "note", "reviewer_id", "reviewer", "token_id", "created_at")


def upgrade() -> None:
    op.create_table('event_review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.Enum('confirmed', 'rejected', 'relabelled', name='review_decision', native_enum=False, length=16), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('reviewer_id', sa.Integer(), nullable=True),
    sa.Column('reviewer', sa.String(length=128), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('undone_at', server.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('undone_by_id', sa.Integer(), nullable=True),
    sa.Column('undone_by', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['event.id'], name=op.f('fk_event_review_event_id_event'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_review'))
    )
    with op.batch_alter_table('event_review', schema=None) as batch_op:
        batch_op.create_index('ix_event_review_event_id_id', ['event_id', 'id'], unique=False)

    _backfill()
    _create_append_only_trigger()


def _backfill() -> None:
    """One row per reviewed event, from its columns; the reviewer's account id where the username has one."""
    op.execute("""
        INSERT INTO event_review (event_id, decision, label, note, reviewer_id, reviewer, token_id, created_at)
        SELECT e.id, e.status,
               CASE WHEN e.status = 'relabelled' THEN e.reviewed_label END,
               e.note,
               (SELECT u.id FROM app_user u WHERE u.username = e.reviewer),
               COALESCE(e.reviewer, 'unknown'),
               NULL,
               COALESCE(e.reviewed_at, e.created_at)
        FROM event e
        WHERE e.status IN ('confirmed', 'rejected', 'relabelled')
        ORDER BY e.id
    """)


def _create_append_only_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in _FIXED)
        op.execute(f"""
            CREATE FUNCTION event_review_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.undone_at IS NOT NULL OR NEW.undone_at IS NULL OR {changed} THEN
                    RAISE EXCEPTION 'event_review keeps decisions as written: only marking a review undone, once, '
                                    'is allowed' USING ERRCODE = 'insufficient_privilege';
                END IF;
                RETURN NEW;
            END
            $$
        """)
        op.execute("CREATE TRIGGER event_review_no_rewrite BEFORE UPDATE ON event_review "
                   "FOR EACH ROW EXECUTE FUNCTION event_review_append_only()")
    else:
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FIXED)
        op.execute(f"CREATE TRIGGER event_review_no_rewrite BEFORE UPDATE ON event_review "
                   f"WHEN OLD.undone_at IS NOT NULL OR NEW.undone_at IS NULL OR {changed} "
                   f"BEGIN SELECT RAISE(ABORT, 'event_review keeps decisions as written: only marking a review "
                   f"undone, once, is allowed'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS event_review_no_rewrite ON event_review")
        op.execute("DROP FUNCTION IF EXISTS event_review_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS event_review_no_rewrite")
    with op.batch_alter_table('event_review', schema=None) as batch_op:
        batch_op.drop_index('ix_event_review_event_id_id')

    op.drop_table('event_review')
