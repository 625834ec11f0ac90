"""Alembic owns the schema: upgrade and downgrade on SQLite and PostgreSQL, and the models match it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from server.db.base import Base
from server.db.migrate import current_revision, downgrade, head_revision, upgrade
from server.db.session import make_engine

TABLES = {"recording", "clip", "event", "explanation", "model_version", "job", "app_user", "user_session", "api_token",
          "login_attempt", "audit_log", "event_review",
          "webhook_subscription", "webhook_delivery", "webhook_attempt"}


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
