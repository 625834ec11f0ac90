"""Shared parameter types. A record ID past its column's range is refused with 422 at the edge instead of
overflowing the database driver, which would be a 500 (``server.schemas.MAX_ID``; ``MAX_BIG_ID`` for the
BIGINT columns). Text is bounded plain text (``server.schemas.Text``): a NUL in a filter would be a 500 on
PostgreSQL. A time is ``server.schemas.UtcDatetime``: zoned, converted to UTC, refused (422) past the range of
UTC datetimes, which was an OverflowError (a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from server.schemas import MAX_BIG_ID, MAX_ID, Text, UtcDatetime

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
BigIdPath = Annotated[int, Path(ge=1, le=MAX_BIG_ID)]  # the BIGINT ids (webhook deliveries)
CursorQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="last id of the previous page")]
OpaqueCursorQuery = Annotated[Text(512) | None, Query(description="next_cursor of the previous page, as it came")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
BigCursorQuery = Annotated[int | None, Query(ge=1, le=MAX_BIG_ID, description="last id of the previous page")]
NamePath = Annotated[Text(64, min_length=1), Path()]
ZONED = "ISO 8601 with a time zone (Z or +hh:mm); a time without one is refused (422)"
DatetimeQuery = Annotated[UtcDatetime | None, Query(description=ZONED)]


def TextQuery(max_length: int = 64, description: str | None = None) -> object:  # noqa: N802 - a type
    """An optional text filter: ``label: TextQuery() = None``."""
    return Annotated[Text(max_length) | None, Query(description=description)]
