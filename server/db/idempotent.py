"""INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL: rows that a unique constraint already holds are
skipped by the database, not by a check-then-insert in code that two workers could both pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db.base import Base


def insert_new(session: Session, entity: type[Base], rows: Sequence[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """An INSERT of ``rows`` into ``entity``'s table that skips every row conflicting with any unique constraint
    or unique index (no conflict target: all of them count). Add ``.returning(...)`` to learn which went in."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(entity).values(list(rows)).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(entity).values(list(rows)).on_conflict_do_nothing()
    raise NotImplementedError(f"no ON CONFLICT DO NOTHING for the {dialect} dialect")
