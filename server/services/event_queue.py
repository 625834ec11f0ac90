"""The review queue (``GET /events``): filters, two sorts, keyset pages behind an opaque cursor, and the
counts the queue shows, computed once on the first page.

Why the counts only on the first page: counting every matching row on every page was most of the time of a
queue request at 100,000 events (issue 12); a client paging on already has them. ``counts`` ignores the status
filter (the queue's tabs show every status's count whichever tab is open). With no other filter they are the
totals per status, kept by database triggers (``server.services.event_counts``) instead of counted.

A page is read as plain rows of the columns the answer shows, the recording's room joined in, never as ORM
objects with their explanations and recording loaded (``server.event_view.PUBLIC_COLUMNS``): building 250
objects per page was most of a queue request's CPU time (issue 12).

The cursor carries the sort and a digest of the filters, so a cursor used with another sort or other filters is
a clear 422 instead of a silently wrong page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from server.db.tables import Event, EventSource, EventStatus, Recording
from server.event_view import PUBLIC_COLUMNS
from server.schemas import MAX_ID
from server.services.event_counts import status_totals
from server.services.pagination import decode_cursor, encode_cursor, keyset_page

# Table columns, not mapped attributes: the queue's statements run as plain SQL, without the ORM's machinery.
_EVENT = Event.__table__.c
_RECORDING = Recording.__table__.c


class QueueSort(StrEnum):
    time = "time"    # newest wall-clock start first (events of recordings without a start time last), then id
    score = "score"  # highest peak score first, then id


@dataclass(frozen=True)
class EventFilter:
    """What the queue is narrowed to; None: no filter. ``since`` / ``until`` bound ``start_wall`` as [since, until)."""

    status: EventStatus | None = None
    label: str | None = None
    room: str | None = None
    recording_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_score: float | None = None
    source: EventSource | None = None

    @property
    def only_status(self) -> bool:
        """No filter but (maybe) the status."""
        return all(value is None for key, value in self._values().items() if key != "status")

    def _values(self) -> dict[str, Any]:
        """The filters by name (``dataclasses.asdict`` deep-copies every value: slow, on every queue request)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def digest(self) -> str:
        """Short and stable: what the cursor remembers of the filters."""
        canonical = json.dumps(self._values(), default=str, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class QueuePage:
    rows: Sequence[Row[Any]]        # the values of ``server.event_view.PUBLIC_COLUMNS``, by name
    count: int | None                # events matching every filter (first page only)
    counts: dict[str, int] | None    # per status, matching every filter but the status (first page only)
    next_cursor: str | None


def list_events(*, session: Session, filters: EventFilter, sort: QueueSort = QueueSort.time, limit: int = 50,
                cursor: str | None = None) -> QueuePage:
    """One page of the queue. InvalidInputError (422) for a malformed cursor or one from another query."""
    kind = _kind(filters, sort)
    keys = [_EVENT.start_wall, _EVENT.id] if sort == QueueSort.time else [_EVENT.peak_score, _EVENT.id]
    codec = _TIME if sort == QueueSort.time else _SCORE
    after = decode_cursor(cursor, kind, codec.decoders, codec.nullable) if cursor is not None else None
    query = _filtered(select(*PUBLIC_COLUMNS).join(Recording.__table__, _RECORDING.id == _EVENT.recording_id),
                      filters, recording_joined=True)
    page = keyset_page(session, query, keys=keys, limit=limit, after=after,
                       nullable_lead=sort == QueueSort.time, rows_of_columns=True)
    next_cursor = encode_cursor(kind, page.next_key, codec.encoders) if page.next_key is not None else None
    count = counts = None
    if cursor is None:
        counts = status_counts(session=session, filters=filters)
        count = counts[filters.status.value] if filters.status is not None else sum(counts.values())
    return QueuePage(page.rows, count, counts, next_cursor)


def cursor_after(event: Event, *, filters: EventFilter, sort: QueueSort = QueueSort.time) -> str:
    """The cursor of a page that ends with ``event`` (what ``next_cursor`` would be): its next page starts
    right after it."""
    key = (event.start_wall, event.id) if sort == QueueSort.time else (event.peak_score, event.id)
    codec = _TIME if sort == QueueSort.time else _SCORE
    return encode_cursor(_kind(filters, sort), key, codec.encoders)


def _kind(filters: EventFilter, sort: QueueSort) -> str:
    return f"events:{sort.value}:{filters.digest()}"


def status_counts(*, session: Session, filters: EventFilter) -> dict[str, int]:
    """Events per status matching ``filters`` except the status: the kept totals when nothing else filters,
    else one grouped count."""
    if filters.only_status:
        found = status_totals(session=session)
    else:
        unfiltered = replace(filters, status=None)
        query = _filtered(select(_EVENT.status, func.count()), unfiltered).group_by(_EVENT.status)
        found = {str(status): int(n) for status, n in session.execute(query)}
    return {s.value: found.get(s.value, 0) for s in EventStatus}


def _filtered(query: Select[Any], filters: EventFilter, *, recording_joined: bool = False) -> Select[Any]:
    if filters.status is not None:
        query = query.where(_EVENT.status == filters.status)
    if filters.label is not None:
        query = query.where(_EVENT.label == filters.label)
    if filters.room is not None:
        if not recording_joined:
            query = query.join(Recording.__table__, _RECORDING.id == _EVENT.recording_id)
        query = query.where(_RECORDING.room == filters.room)
    if filters.recording_id is not None:
        query = query.where(_EVENT.recording_id == filters.recording_id)
    if filters.since is not None:
        query = query.where(_EVENT.start_wall >= filters.since)
    if filters.until is not None:
        query = query.where(_EVENT.start_wall < filters.until)
    if filters.min_score is not None:
        query = query.where(_EVENT.peak_score >= filters.min_score)
    if filters.source is not None:
        query = query.where(_EVENT.source == filters.source)
    return query


def _id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValueError("not an event id")
    return value


def _score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError("not a score")
    return float(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a time")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a cursor time has a zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class _Codec:
    encoders: tuple[Any, ...]
    decoders: tuple[Any, ...]
    nullable: tuple[bool, ...]


_TIME = _Codec((lambda t: t.astimezone(UTC).isoformat(), int), (_time, _id), (True, False))
_SCORE = _Codec((float, int), (_score, _id), (False, False))
