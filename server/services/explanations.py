"""An event's explanations and the agreement score the event carries for them.

``event.agreement`` repeats the explanations' ATCON agreement (the first of them, by id, that has one) so the
review queue shows it without loading three explanations per event (issue 12). It is set here, with the
explanations it comes from, so the two never disagree: store explanations only through ``store_explanations``
(or call ``set_event_agreement`` after changing them some other way).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.tables import Event, Explanation


def store_explanations(*, session: Session, event: Event, explanations: Iterable[Explanation]) -> list[Explanation]:
    """Add ``explanations`` (in the order given, which becomes their id order) to ``event`` and set its
    agreement from them. Flushes."""
    items = list(explanations)
    for item in items:
        item.event_id = event.id
        session.add(item)
    set_event_agreement(session=session, event=event)
    return items


def set_event_agreement(*, session: Session, event: Event) -> float | None:
    """Recompute ``event.agreement`` from its stored explanations (the first, by id, with an agreement; None if
    none has one) and return it. Flushes."""
    session.flush()
    event.agreement = session.scalar(
        select(Explanation.agreement).where(Explanation.event_id == event.id, Explanation.agreement.is_not(None))
        .order_by(Explanation.id).limit(1))
    session.flush()
    return event.agreement
