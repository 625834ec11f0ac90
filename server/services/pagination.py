"""Keyset pagination: the one way every list of the API pages (events, recordings, reviews, jobs, audit,
webhook deliveries), and the opaque cursors of the lists that sort by more than the id.

Why keyset and not OFFSET: a page after a cursor starts where the previous one ended (``WHERE (key, id) <
(cursor)``), so with an index on the sort key and the id it reads one page of the index however deep the
client has gone, and rows inserted meanwhile never shift or repeat the pages still to come. OFFSET reads and
throws away every row before the page.

Order: descending by every key (newest / highest first); the last key must be unique (the id), so the order
is total. The leading key may be NULL (``nullable_lead``, e.g. an event's wall-clock start when its recording
has none): those rows come after all the others, ordered by the remaining keys. Each part is fetched with its
own query, so both stay index range scans instead of an ``OR ... IS NULL`` that no index can serve in order.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Column, ColumnElement, Select, bindparam, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.services.errors import InvalidInputError

Row = TypeVar("Row")
Key = tuple[Any, ...]
SortKey = InstrumentedAttribute[Any] | Column[Any]  # a mapped attribute, or a table column (plain statements)


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: Sequence[Row]
    next_key: Key | None  # the sort key of the last row when more rows follow; None: this is the last page


def keyset_page(session: Session, query: Select[Any], *, keys: Sequence[SortKey], limit: int,
                after: Key | None = None, nullable_lead: bool = False, rows_of_columns: bool = False) -> Page[Any]:
    """One page of ``query`` (a ``select(Entity)`` with its filters), ordered by ``keys`` descending, starting
    after the row whose key is ``after`` (None: the first page). Reads ``limit + 1`` rows to know whether
    another page follows, so a last page that happens to be full gets no cursor.

    ``rows_of_columns``: ``query`` selects columns (``select(A.x, A.y, ...)``, the keys among them by name), and
    the page holds its plain rows rather than entities."""
    fetch = session.execute if rows_of_columns else session.scalars
    if after is not None and len(after) != len(keys):
        raise InvalidInputError(f"cursor has {len(after)} key values, this list sorts by {len(keys)}")
    lead, rest = keys[0], list(keys[1:])
    rows: list[Any] = []
    in_nulls = nullable_lead and after is not None and after[0] is None
    if not in_nulls:
        part = query.where(lead.is_not(None)) if nullable_lead else query
        if after is not None:
            part = part.where(_before(keys, after))
        rows = list(fetch(part.order_by(*(k.desc() for k in keys)).limit(limit + 1)))
    if nullable_lead and len(rows) <= limit:
        part = query.where(lead.is_(None))
        if in_nulls and rest:
            assert after is not None
            part = part.where(_before(rest, after[1:]))
        rows += fetch(part.order_by(*(k.desc() for k in rest)).limit(limit + 1 - len(rows)))
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, tuple(getattr(rows[-1], k.key) for k in keys))


def id_page(session: Session, query: Select[Any], *, id_column: InstrumentedAttribute[Any], limit: int,
            cursor: int | None) -> tuple[Sequence[Any], int | None]:
    """The lists whose cursor is the last id of the previous page (newest first): (rows, next cursor)."""
    page = keyset_page(session, query, keys=[id_column], limit=limit,
                       after=(cursor,) if cursor is not None else None)
    return page.rows, page.next_key[0] if page.next_key is not None else None


def _before(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """``(k1, k2, ...) < (v1, v2, ...)``: a row comparison, which PostgreSQL matches to an index on the keys
    (SQLite 3.15+ has row values too). Values are bound with their column's type (times as the column
    stores them)."""
    bound = [bindparam(None, v, type_=k.type) for k, v in zip(keys, values, strict=True)]
    if len(keys) == 1:
        return keys[0] < bound[0]
    return tuple_(*keys) < tuple_(*bound)


def encode_cursor(kind: str, key: Key, encoders: Sequence[Callable[[Any], Any]]) -> str:
    """An opaque cursor: URL-safe base64 of ``{"k": kind, "v": [encoded key values]}``. ``kind`` names the order
    (and whatever else the cursor is only valid with), so a cursor is never read in a list it did not come from."""
    values = [None if v is None else encode(v) for v, encode in zip(key, encoders, strict=True)]
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, decoders: Sequence[Callable[[Any], Any]],
                  nullable: Sequence[bool] | None = None) -> Key:
    """The key ``encode_cursor`` wrote. InvalidInputError (422) for anything else: not base64 JSON, another
    kind (another sort or other filters than the cursor came from), the wrong number or type of values."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("malformed cursor: pass next_cursor from the previous page as it is") from exc
    if not isinstance(body, dict) or not isinstance(body.get("v"), list):
        raise InvalidInputError("malformed cursor: pass next_cursor from the previous page as it is")
    if body.get("k") != kind:
        raise InvalidInputError("this cursor comes from a list with another sort or other filters: start again "
                                "without a cursor, or repeat the query it came from")
    values = body["v"]
    if len(values) != len(decoders):
        raise InvalidInputError("malformed cursor: pass next_cursor from the previous page as it is")
    may_be_null = nullable if nullable is not None else [False] * len(decoders)
    out = []
    for value, decode, null_ok in zip(values, decoders, may_be_null, strict=True):
        if value is None:
            if not null_ok:
                raise InvalidInputError("malformed cursor: pass next_cursor from the previous page as it is")
            out.append(None)
            continue
        try:
            out.append(decode(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError("malformed cursor: pass next_cursor from the previous page as it is") from exc
    return tuple(out)
