"""Shared parameter types. Database IDs are 64-bit: a larger number is refused with 422 at the edge instead of
overflowing the database driver (SQLite raises OverflowError, which would be a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from server.schemas import MAX_ID

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
CursorQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="last id of the previous page")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
