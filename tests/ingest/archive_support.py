"""A hand-made archive index for retention tests: segment files of a given size over given spans."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from ingest.archive import Segment, SegmentClock, append_entries

STARTED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def fake_archive(folder: Path, spans: list[tuple[float, float]], *, size: int = 1000, open_last: bool = False,
                 started: datetime = STARTED) -> list[Segment]:
    """Segments with files of ``size`` bytes over ``spans`` (recording seconds from ``started``)."""
    clock = SegmentClock(offset=0.0, origin=0, time_base=Fraction(1, 90000), base=0)
    made = []
    for seq, (a, b) in enumerate(spans, 1):
        segment = Segment(seq=seq, file=f"seg-{seq:08d}.ts", clock=clock, start=a, fps=15.0, width=64, height=48,
                          rotation=0, codec="h264", mode="remux",
                          start_wall=(started + timedelta(seconds=a)).isoformat())
        (folder / segment.file).parent.mkdir(parents=True, exist_ok=True)
        (folder / segment.file).write_bytes(bytes(size))
        entries = [segment.open_entry()]
        if not (open_last and seq == len(spans)):
            segment = replace(segment, end=b, bytes=size, frames=1,
                              end_wall=(started + timedelta(seconds=b)).isoformat())
            entries.append(segment.close_entry())
        append_entries(folder, entries)
        made.append(segment)
    return made
