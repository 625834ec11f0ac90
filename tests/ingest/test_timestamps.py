"""started_at_from_filename: recording start from configurable file-name patterns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ingest.timestamps import started_at_from_filename


def test_patterns():
    assert started_at_from_filename("/nvr/cam12_20240501_223015.mp4", "%Y%m%d_%H%M%S") == datetime(
        2024, 5, 1, 22, 30, 15, tzinfo=UTC
    )
    assert started_at_from_filename("rec-2024-05-01T22-30-15.250.mkv", "rec-%Y-%m-%dT%H-%M-%S.%f") == datetime(
        2024, 5, 1, 22, 30, 15, 250000, tzinfo=UTC
    )
    with_zone = started_at_from_filename("x_20240501T223015+0200.ts", "%Y%m%dT%H%M%S%z")
    assert with_zone == datetime(2024, 5, 1, 20, 30, 15, tzinfo=UTC)
    assert started_at_from_filename("x_20240501T223015Z.ts", "%Y%m%dT%H%M%S%z") == datetime(
        2024, 5, 1, 22, 30, 15, tzinfo=UTC
    )


def test_local_time_zone_and_no_match():
    berlin = started_at_from_filename("20240115_080000.mp4", "%Y%m%d_%H%M%S", tz=ZoneInfo("Europe/Berlin"))
    assert berlin == datetime(2024, 1, 15, 7, 0, tzinfo=UTC)
    fixed = started_at_from_filename("20240115_080000.mp4", "%Y%m%d_%H%M%S", tz=timezone(timedelta(hours=-5)))
    assert fixed == datetime(2024, 1, 15, 13, 0, tzinfo=UTC)
    assert started_at_from_filename("ward.mp4", "%Y%m%d_%H%M%S") is None
    assert started_at_from_filename("20241399_250000.mp4", "%Y%m%d_%H%M%S") is None  # not a real date
    with pytest.raises(ValueError, match="unsupported directive"):
        started_at_from_filename("a.mp4", "%Y-%b")
