"""Alembic owns the schema: upgrade and downgrade on SQLite and PostgreSQL, and the models match it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from server.db.base import Base
from server.db.migrate import current_revision, downgrade, head_revision, upgrade
from server.db.session import make_engine

TABLES = {"recording", "clip", "event", "explanation", "model_version", "job", "app_user", "user_session", "api_token",
          "login_attempt", "audit_log", "event_review",
          "webhook_subscription", "webhook_delivery", "webhook_attempt", "event_status_delta", "auth_epoch"}


def test_upgrade_downgrade_roundtrip(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"tables and migrations disagree: {diff}"
        downgrade(db_url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        assert current_revision(engine) is None
        upgrade(db_url)
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0009_keeps_every_row_both_ways(db_url: str) -> None:
    """0009 adds ``event.source`` in place: existing events become the model's, and nothing that hangs off an
    event goes. (A batch table copy on SQLite would drop ``event``, and the drop cascades to the review history
    and the explanations, since foreign keys are on.)"""
    upgrade(db_url)
    downgrade(db_url, "0008")
    engine = make_engine(db_url)
    counts = ("SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM event_review), "
              "(SELECT count(*) FROM explanation)")
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO model_version (id, name, architecture, class_names, input_spec, "
                              "checkpoint_path, checkpoint_sha256, metrics, state, created_at) VALUES (90, 'm', 'a', "
                              "'[\"fall\"]', '{}', 'p', 'sha-0009', '{}', 'retired', '2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO recording (id, source, status, warnings, clip_count, created_at, "
                              "updated_at) VALUES (90, 's.mp4', 'scored', '[]', 0, '2026-01-01T00:00:00+00:00', "
                              "'2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO event (id, recording_id, label, start, \"end\", peak_score, peak_time, "
                              "model_version_id, status, created_at) VALUES (90, 90, 'fall', 0, 1, 0.5, 0.5, 90, "
                              "'confirmed', '2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO event_review (event_id, decision, reviewer, created_at) "
                              "VALUES (90, 'confirmed', 'nurse', '2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO explanation (event_id, method, key_frame_time, overlay_path, created_at) "
                              "VALUES (90, 'grad_cam', 0.5, 'o.png', '2026-01-01T00:00:00+00:00')"))
            before = tuple(conn.execute(text(counts)).one())
        upgrade(db_url)
        with engine.connect() as conn:
            assert tuple(conn.execute(text(counts)).one()) == before
            assert conn.execute(text("SELECT source FROM event WHERE id = 90")).scalar_one() == "model"
        downgrade(db_url, "0008")
        with engine.connect() as conn:
            assert tuple(conn.execute(text(counts)).one()) == before
        upgrade(db_url)
    finally:
        engine.dispose()
