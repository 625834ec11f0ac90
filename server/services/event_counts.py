"""How many events there are in each status, from the deltas database triggers append (``EventStatusDelta``,
migration 0014) instead of a count of the whole event table.

Why: the queue's first page shows the per-status counts, and with no filter but the status those are counts of
every event. At 100,000 events that count took 22 ms of PostgreSQL time on every queue request, more than all
the rest of the request (issue 12). The triggers add +1 / -1 rows in the same transaction as the change, so the
sums are exact and consistent with the rest of what the transaction reads, on SQLite and PostgreSQL alike.

The deltas are folded into one row per status once there are more than ``FOLD_AT`` of them, by whichever
request finds so many: ``DELETE ... RETURNING`` takes exactly the rows it sums (rows another transaction adds
meanwhile are left for the next fold), and on PostgreSQL an advisory lock lets one request fold at a time while
the others just read the sums.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from server.db.tables import EventStatusDelta

#: fold when this many delta rows have piled up (each review adds two)
FOLD_AT = 200
_FOLD_LOCK = 0x77770014  # pg_try_advisory_xact_lock key: one folder at a time


def status_totals(*, session: Session) -> dict[str, int]:
    """Events per status value (statuses without events may be missing or 0)."""
    delta = EventStatusDelta.__table__.c  # a plain statement, without the ORM's machinery: read on most requests
    rows = session.execute(select(delta.status, func.sum(delta.n), func.count()).group_by(delta.status)).all()
    if sum(int(count) for _status, _n, count in rows) > FOLD_AT:
        fold(session=session)
    return {str(status): int(n) for status, n, _count in rows}


def fold(*, session: Session) -> bool:
    """Replace the delta rows this transaction can see with one row per status (same sums). False when another
    transaction is folding right now (PostgreSQL), which is fine: it does the same."""
    if session.get_bind().dialect.name == "postgresql" and not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _FOLD_LOCK}):
        return False
    table = EventStatusDelta.__table__
    taken = session.execute(delete(table).returning(table.c.status, table.c.n)).all()
    sums: Counter[str] = Counter()
    for status, n in taken:
        sums[str(status)] += int(n)
    if sums:
        session.execute(insert(table), [{"status": s, "n": n} for s, n in sums.items()])
    return True
