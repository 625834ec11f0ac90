"""Programmatic Alembic: ``wardwatch db upgrade`` and the embedded server's start-up both come through here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from server.db.session import make_engine
from server.security.secret_box import SecretBox

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


#: Builds the encrypter of secrets at rest, for migrations that encrypt or decrypt stored values. Called only
#: when a migration meets such a value, so migrating an empty database never needs (or creates) a key.
SecretBoxFactory = Callable[[], SecretBox]


def alembic_config(url: str, secret_box: SecretBoxFactory | None = None) -> Config:
    """An Alembic config bound to ``url`` without touching the environment (``secret_box``: the caller's keys;
    without it a migration that needs a key builds the settings from the environment)."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logging"] = False
    if secret_box is not None:
        cfg.attributes["secret_box"] = secret_box
    return cfg


def upgrade(url: str, revision: str = "head", *, secret_box: SecretBoxFactory | None = None) -> None:
    """Bring the schema at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url, secret_box), revision)


def downgrade(url: str, revision: str, *, secret_box: SecretBoxFactory | None = None) -> None:
    """Take the schema at ``url`` down to ``revision`` (``base`` drops everything)."""
    command.downgrade(alembic_config(url, secret_box), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def is_up_to_date(url: str) -> bool:
    engine = make_engine(url)
    try:
        return current_revision(engine) == head_revision()
    finally:
        engine.dispose()
