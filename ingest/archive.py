"""The archive of a live stream: rolling segment files and the index saying which recording seconds each holds.

A live stream's frames are read once; without a copy on disk an event on it can have no review clip, and an event
still open when its reader died has no frames left to explain. The archive is that copy: the packets the reader
demuxed, written as they arrive into MPEG-TS segment files of about ``segment_seconds`` each
(:mod:`ingest.archive_writer`), read back by recording time (:mod:`ingest.archive_reader`).

Why MPEG-TS segments:
* a writer killed mid-segment leaves a readable file up to its last packet (no trailer or ``moov`` needed, and
  every packet is flushed as it is written), so a crash loses at most the frames in flight;
* a 90 kHz clock with ``mpegts_copyts``: the source's timestamps are stored as they came (RTSP and MPEG-TS
  sources are 90 kHz themselves), so the index maps a stored frame back to *exactly* the recording second the live
  reader gave it; the review clip's ``clip_start`` is as exact as an upload's;
* H.264 and HEVC are remuxed without decoding or encoding (the cost is one write per packet); other codecs
  (MJPEG cameras) are encoded to H.264.

The index (``index.jsonl``, one JSON object a line, appended under an exclusive ``flock``) holds, per segment, its
file, its clock (how a stored timestamp maps to recording seconds), its span in recording seconds and wall
clock, frame count and size; the outages (``gap``) the reader saw, so recording time across them stays
explicit; and the spans whose segments retention removed. Appending is the writer's only change; retention
rewrites the whole file (compacted) under the same lock, and the writer opens it afresh for every append.
A line cut short by a crash is skipped when read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "INDEX_FILE", "ArchiveIndex", "ArchiveSpec", "RemovedSpan", "Segment", "SegmentClock", "append_entries",
    "locked", "read_index", "reason", "write_index",
]

INDEX_FILE = "index.jsonl"
_LOCK_FILE = ".index.lock"
SEGMENT_SUFFIX = ".ts"
#: time base of the segment files (MPEG-TS): exact for 90 kHz sources (RTSP, MPEG-TS) and millisecond ones (RTMP)
FILE_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True)
class ArchiveSpec:
    """How a stream is archived.

    Attributes:
        segment_seconds: a segment is closed at the first keyframe at least this long after its start (remux) or
            after this long (encode). Shorter segments: less lost at a crash and finer retention, more files.
        remux_codecs: codecs stored as they arrive (no decode or encode); others are encoded to H.264.
        crf, preset: x264 quality and speed when encoding (ignored for remuxed streams).
        max_side: when encoding, scale so the longer side is at most this (None: the source size).
    """

    segment_seconds: float = 10.0
    remux_codecs: tuple[str, ...] = ("h264", "hevc")
    crf: int = 23
    preset: str = "veryfast"
    max_side: int | None = None

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0:
            raise ValueError("segment_seconds must be positive")


@dataclass(frozen=True)
class SegmentClock:
    """How a segment's stored timestamps map to recording seconds.

    The live reader gives a frame with source timestamp ``pts`` the time ``offset + (pts - origin) * time_base``
    (``ingest._timeline.Timeline``); the segment stores ``pts - base`` at 90 kHz. Reading back inverts the
    storage and applies the same formula, so the times are the reader's own (bit for bit whenever the source
    clock divides 90 kHz, to 1/90000 s otherwise).
    """

    offset: float
    origin: int
    time_base: Fraction
    base: int

    def source_pts(self, file_pts: int, file_time_base: Fraction = FILE_TIME_BASE) -> int:
        """The source timestamp a stored one came from."""
        return self.base + round(Fraction(file_pts) * file_time_base / self.time_base)

    def seconds_of_source(self, pts: int) -> float:
        """Recording seconds of a source timestamp, as the live reader computes them."""
        return self.offset + max(0.0, float((pts - self.origin) * self.time_base))

    def seconds(self, file_pts: int, file_time_base: Fraction = FILE_TIME_BASE) -> float:
        """Recording seconds of a stored timestamp."""
        return self.seconds_of_source(self.source_pts(file_pts, file_time_base))

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "origin": self.origin, "base": self.base,
                "time_base": [self.time_base.numerator, self.time_base.denominator]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SegmentClock:
        num, den = data["time_base"]
        return cls(float(data["offset"]), int(data["origin"]), Fraction(int(num), int(den)), int(data["base"]))


@dataclass(frozen=True)
class Segment:
    """One segment file and the span of the recording it holds.

    Attributes:
        seq: 1, 2, ... in writing order (= time order), never reused.
        file: file name inside the archive folder.
        clock: stored timestamps -> recording seconds.
        start: recording seconds of its first frame.
        end: recording seconds after its last frame (last frame + one frame interval); None while it is written.
        start_wall, end_wall: the same as UTC wall clock (ISO 8601), when the recording's start is known.
        fps: the source's frame rate; width, height: coded picture size; rotation: clockwise degrees to show
            it upright (the container does not keep it, so the index does).
        codec: stored codec; mode: ``remux`` (packets as they came) or ``encode`` (re-encoded to H.264).
        frames: frames it holds; bytes: its size (both set when it is closed).
        recovered: closed after its writer died, from what the file holds.
    """

    seq: int
    file: str
    clock: SegmentClock
    start: float
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    mode: str
    start_wall: str | None = None
    end: float | None = None
    end_wall: str | None = None
    frames: int = 0
    bytes: int = 0
    recovered: bool = False

    @property
    def closed(self) -> bool:
        return self.end is not None

    @property
    def span_end(self) -> float:
        """``end``, or ``start`` while it is still written (nothing in it is readable yet)."""
        return self.end if self.end is not None else self.start

    def overlaps(self, a: float, b: float) -> bool:
        return self.start < b and self.span_end > a

    def open_entry(self) -> dict[str, Any]:
        return {"type": "open", "seq": self.seq, "file": self.file, "clock": self.clock.to_json(),
                "start": self.start, "start_wall": self.start_wall, "fps": self.fps, "width": self.width,
                "height": self.height, "rotation": self.rotation, "codec": self.codec, "mode": self.mode}

    def close_entry(self) -> dict[str, Any]:
        return {"type": "close", "seq": self.seq, "end": self.end, "end_wall": self.end_wall, "frames": self.frames,
                "bytes": self.bytes, "recovered": self.recovered, "start": self.start}


@dataclass(frozen=True)
class RemovedSpan:
    """Recording seconds whose segments were deleted (retention, or unreadable after a crash)."""

    start: float
    end: float
    reason: str
    segments: int = 1


@dataclass
class ArchiveIndex:
    """The archive as its index describes it: segments in time order, outages, removed spans."""

    segments: list[Segment] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    removed: list[RemovedSpan] = field(default_factory=list)

    @property
    def closed(self) -> list[Segment]:
        return [s for s in self.segments if s.closed]

    last_removed_seq: int = 0  # the highest sequence number ever removed (numbers are never reused)

    @property
    def next_seq(self) -> int:
        last = max((s.seq for s in self.segments), default=0)
        return max(last, self.last_removed_seq) + 1

    @property
    def end(self) -> float:
        """Recording seconds up to which the archive is final: closed segments and outages."""
        ends = [s.end for s in self.segments if s.end is not None] + [b for _, b in self.gaps]
        return max(ends, default=0.0)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.segments)

    def overlapping(self, a: float, b: float) -> list[Segment]:
        return [s for s in self.segments if s.overlaps(a, b)]

    def removed_within(self, a: float, b: float) -> list[RemovedSpan]:
        return [r for r in self.removed if r.start < b and r.end > a]

    def entries(self) -> Iterator[dict[str, Any]]:
        """The index as lines (compacted: one open and one close line per segment)."""
        if self.last_removed_seq:
            yield {"type": "seq", "removed_up_to": self.last_removed_seq}
        for span in self.removed:
            yield {"type": "removed", **asdict(span)}
        for gap in self.gaps:
            yield {"type": "gap", "start": gap[0], "end": gap[1]}
        for segment in self.segments:
            yield segment.open_entry()
            if segment.closed:
                yield segment.close_entry()


def reason(exc: BaseException) -> str:
    """Why an FFmpeg or file operation failed, without the path it names (messages reach the API and the
    recording's warnings, and the server's file layout is none of a client's business)."""
    text = getattr(exc, "strerror", None)
    return str(text) if text else type(exc).__name__


def index_path(directory: Path) -> Path:
    return Path(directory) / INDEX_FILE


@contextmanager
def locked(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the archive's exclusive lock (writers append, retention rewrites: never at the same time)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / _LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_entries(directory: str | os.PathLike[str], entries: list[dict[str, Any]], *, lock: bool = True) -> None:
    """Append lines to the index, flushed to disk; under the lock unless the caller holds it (``lock=False``)."""
    folder = Path(directory)
    text = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries)
    with locked(folder) if lock else nullcontext(), index_path(folder).open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_index(directory: str | os.PathLike[str], index: ArchiveIndex) -> None:
    """Replace the index with ``index`` (compacted). The caller holds :func:`locked`."""
    path = index_path(Path(directory))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for entry in index.entries():
            handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_index(directory: str | os.PathLike[str]) -> ArchiveIndex:
    """The index of the archive in ``directory`` (empty when there is none). Lines that do not parse (one cut
    short by a crash) are skipped with a warning."""
    path = index_path(Path(directory))
    index = ArchiveIndex()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return index
    by_seq: dict[int, Segment] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            _apply(json.loads(line), index, by_seq)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s line %d skipped (%s)", path, number, exc)
    index.segments = sorted(by_seq.values(), key=lambda s: s.seq)
    index.gaps.sort()
    index.removed.sort(key=lambda r: r.start)
    return index


def _apply(entry: dict[str, Any], index: ArchiveIndex, by_seq: dict[int, Segment]) -> None:
    kind = entry["type"]
    if kind == "open":
        by_seq[int(entry["seq"])] = Segment(
            seq=int(entry["seq"]), file=str(entry["file"]), clock=SegmentClock.from_json(entry["clock"]),
            start=float(entry["start"]), start_wall=entry.get("start_wall"), fps=float(entry["fps"]),
            width=int(entry["width"]), height=int(entry["height"]), rotation=int(entry["rotation"]),
            codec=str(entry["codec"]), mode=str(entry["mode"]))
    elif kind == "close":
        seq = int(entry["seq"])
        if seq in by_seq:
            by_seq[seq] = replace(by_seq[seq], end=float(entry["end"]), end_wall=entry.get("end_wall"),
                                  frames=int(entry["frames"]), bytes=int(entry["bytes"]),
                                  recovered=bool(entry.get("recovered", False)),
                                  start=float(entry.get("start", by_seq[seq].start)))
    elif kind == "gap":
        index.gaps.append((float(entry["start"]), float(entry["end"])))
    elif kind == "removed":
        index.removed.append(RemovedSpan(float(entry["start"]), float(entry["end"]), str(entry["reason"]),
                                         int(entry.get("segments", 1))))
    elif kind == "drop":  # a segment taken out of the index (retention, recovery): its span is in a "removed"
        seq = int(entry["seq"])
        by_seq.pop(seq, None)
        index.last_removed_seq = max(index.last_removed_seq, seq)
    elif kind == "seq":
        index.last_removed_seq = max(index.last_removed_seq, int(entry["removed_up_to"]))
    else:
        raise ValueError(f"unknown entry type {kind!r}")
