"""The review queue under load (issue 12): event.agreement, per-status counts kept by triggers, an index for
label + time, and the epoch that tells API processes their cached token look-ups may be stale

- ``event.agreement``: the ATCON agreement of the event's explanations (the first of them, by id, that has one),
  so a queue page shows it without loading three explanations per event. Kept by triggers on ``explanation``
  (insert, delete, a change of its agreement or event) in the same transaction, whoever writes explanations
  (the scoring pipeline, an import, SQL by hand); backfilled here.
- ``event_status_delta``: +1 / -1 per status, appended by triggers on ``event`` (insert, delete, a status
  change; cascading deletes included). The unfiltered per-status counts of the queue's first page are their
  sums, instead of a count of every event on every request (22 ms of PostgreSQL time at 100,000 events).
  Append-only, so concurrent writers never wait on a counter row; ``server.services.event_counts`` folds the
  rows into one per status now and then. Backfilled with the current counts.
- ``ix_event_label_start_wall_id_status``: a label + since page in order, and its counts from the index alone
  (15 ms -> 1.5 ms at 100,000 events).
- ``auth_epoch``: one row; triggers raise its value when an API token is revoked, deleted, or its expiry,
  scopes, owner or hash change, and when a user is disabled, deleted, or changes role, name or demo flag.
  Each API process keeps token look-ups in memory (``server.services.token_cache``) only while the value is
  the one they were made under, so a revocation holds on the next request however it was made.

Note for later migrations: a SQLite batch table copy of ``event``, ``explanation``, ``api_token`` or ``app_user``
drops these
triggers with the old table; recreate them (``create_triggers``) after such a copy.

Revision ID: 0014_event_agreement
Revises: 0013_stream_archive
Create Date: 2026-12-07 00:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.access_tables

revision: str = "0014_event_agreement"
down_revision: str | None = "0013_stream_archive"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = server.db.access_tables.BigId
TOKEN_COLUMNS = "revoked_at, expires_at, scopes, user_id, token_hash"
USER_COLUMNS = "active, role, demo, username"
# event.agreement from its explanations: the first, by id, that has one
AGREEMENT = ("UPDATE event SET agreement = (SELECT x.agreement FROM explanation x WHERE x.event_id = event.id "
             "AND x.agreement IS NOT NULL ORDER BY x.id LIMIT 1)")


def upgrade() -> None:
    # in place: a batch copy of "event" on SQLite would cascade-delete its reviews and explanations (see 0009)
    op.add_column("event", sa.Column("agreement", sa.Float(), nullable=True))
    op.execute(f"{AGREEMENT} WHERE EXISTS (SELECT 1 FROM explanation x WHERE x.event_id = event.id "
               "AND x.agreement IS NOT NULL)")
    op.create_index("ix_event_label_start_wall_id_status", "event", ["label", "start_wall", "id", "status"])

    op.create_table(
        "event_status_delta",
        sa.Column("id", BigId, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_status_delta")),
    )
    op.execute("INSERT INTO event_status_delta (status, n) SELECT status, count(*) FROM event GROUP BY status")

    op.create_table(
        "auth_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_epoch")),
    )
    op.execute("INSERT INTO auth_epoch (id, value) VALUES (1, 0)")
    create_triggers()


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION event_status_delta_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP <> 'INSERT' THEN
                    INSERT INTO event_status_delta (status, n) VALUES (OLD.status, -1);
                END IF;
                IF TG_OP <> 'DELETE' THEN
                    INSERT INTO event_status_delta (status, n) VALUES (NEW.status, 1);
                END IF;
                RETURN NULL;
            END
            $$
        """)
        op.execute("""
            CREATE FUNCTION event_status_delta_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM event_status_delta;
                RETURN NULL;
            END
            $$
        """)
        op.execute("CREATE TRIGGER event_status_delta_insert_delete AFTER INSERT OR DELETE ON event "
                   "FOR EACH ROW EXECUTE FUNCTION event_status_delta_row()")
        op.execute("CREATE TRIGGER event_status_delta_update AFTER UPDATE OF status ON event FOR EACH ROW "
                   "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION event_status_delta_row()")
        op.execute("CREATE TRIGGER event_status_delta_truncate AFTER TRUNCATE ON event "
                   "FOR EACH STATEMENT EXECUTE FUNCTION event_status_delta_truncate()")
        op.execute(f"""
            CREATE FUNCTION event_agreement_sync() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP <> 'INSERT' THEN
                    {AGREEMENT} WHERE id = OLD.event_id;
                END IF;
                IF TG_OP <> 'DELETE' THEN
                    {AGREEMENT} WHERE id = NEW.event_id;
                END IF;
                RETURN NULL;
            END
            $$
        """)
        op.execute("CREATE TRIGGER explanation_agreement AFTER INSERT OR DELETE OR UPDATE OF agreement, event_id "
                   "ON explanation FOR EACH ROW EXECUTE FUNCTION event_agreement_sync()")
        op.execute("""
            CREATE FUNCTION auth_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE auth_epoch SET value = value + 1 WHERE id = 1;
                RETURN NULL;
            END
            $$
        """)
        op.execute(f"CREATE TRIGGER api_token_auth_epoch AFTER UPDATE OF {TOKEN_COLUMNS} OR DELETE OR TRUNCATE "
                   "ON api_token FOR EACH STATEMENT EXECUTE FUNCTION auth_epoch_bump()")
        op.execute(f"CREATE TRIGGER app_user_auth_epoch AFTER UPDATE OF {USER_COLUMNS} OR DELETE OR TRUNCATE "
                   "ON app_user FOR EACH STATEMENT EXECUTE FUNCTION auth_epoch_bump()")
    else:
        delta = "INSERT INTO event_status_delta (status, n) VALUES"
        op.execute(f"CREATE TRIGGER event_status_delta_insert AFTER INSERT ON event BEGIN {delta} (NEW.status, 1); END")
        op.execute(f"CREATE TRIGGER event_status_delta_delete AFTER DELETE ON event BEGIN {delta} (OLD.status, -1); END")
        op.execute("CREATE TRIGGER event_status_delta_update AFTER UPDATE OF status ON event "
                   f"WHEN OLD.status IS NOT NEW.status BEGIN {delta} (OLD.status, -1); {delta} (NEW.status, 1); END")
        op.execute(f"CREATE TRIGGER explanation_agreement_insert AFTER INSERT ON explanation "
                   f"BEGIN {AGREEMENT} WHERE id = NEW.event_id; END")
        op.execute(f"CREATE TRIGGER explanation_agreement_delete AFTER DELETE ON explanation "
                   f"BEGIN {AGREEMENT} WHERE id = OLD.event_id; END")
        op.execute(f"CREATE TRIGGER explanation_agreement_update AFTER UPDATE OF agreement, event_id ON explanation "
                   f"BEGIN {AGREEMENT} WHERE id IN (OLD.event_id, NEW.event_id); END")
        bump = "BEGIN UPDATE auth_epoch SET value = value + 1 WHERE id = 1; END"
        op.execute(f"CREATE TRIGGER api_token_auth_epoch_update AFTER UPDATE OF {TOKEN_COLUMNS} ON api_token {bump}")
        op.execute(f"CREATE TRIGGER api_token_auth_epoch_delete AFTER DELETE ON api_token {bump}")
        op.execute(f"CREATE TRIGGER app_user_auth_epoch_update AFTER UPDATE OF {USER_COLUMNS} ON app_user {bump}")
        op.execute(f"CREATE TRIGGER app_user_auth_epoch_delete AFTER DELETE ON app_user {bump}")


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in (("api_token_auth_epoch", "api_token"), ("app_user_auth_epoch", "app_user"),
                               ("event_status_delta_insert_delete", "event"), ("event_status_delta_update", "event"),
                               ("event_status_delta_truncate", "event"), ("explanation_agreement", "explanation")):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for function in ("auth_epoch_bump", "event_status_delta_row", "event_status_delta_truncate",
                         "event_agreement_sync"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for trigger in ("api_token_auth_epoch_update", "api_token_auth_epoch_delete", "app_user_auth_epoch_update",
                        "app_user_auth_epoch_delete", "event_status_delta_insert", "event_status_delta_delete",
                        "event_status_delta_update", "explanation_agreement_insert", "explanation_agreement_delete",
                        "explanation_agreement_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def downgrade() -> None:
    drop_triggers()
    op.drop_table("auth_epoch")
    op.drop_table("event_status_delta")
    op.drop_index("ix_event_label_start_wall_id_status", table_name="event")
    op.drop_column("event", "agreement")  # in place (SQLite 3.35+), as 0009b
