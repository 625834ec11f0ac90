"""``EXPLAIN (ANALYZE, BUFFERS)`` of the statements the review queue really sends (for ``load.py --explain``).

The statements are captured from this checkout's ``list_events`` on a throwaway engine, so what is explained
is what the server runs (its joins, its keyset order, its counts), not a hand-written approximation of it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import create_engine, event

from server.db.session import make_session_factory
from server.services.event_queue import EventFilter, list_events


def queue_statements(database_url: str, filters: EventFilter) -> list[tuple[str, Any]]:
    """(SQL, parameters) of every statement one first page of the queue sends, in order."""
    engine = create_engine(database_url)
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    try:
        with make_session_factory(engine)() as session:
            list_events(session=session, filters=filters, limit=50)
            session.rollback()
    finally:
        engine.dispose()
    return sent


def explain(database_url: str, cases: dict[str, EventFilter]) -> str:
    """The plans and timings of each case's statements."""
    out: list[str] = []
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        for name, filters in cases.items():
            for statement, parameters in queue_statements(database_url, filters):
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).fetchall()
                out.append(f"\n-- {name}\n{statement}\n" + "\n".join(row[0] for row in plan))
            conn.rollback()
    return "\n".join(out)
