"""Read a live stream's archive back by recording time, and close the segment a dead writer left open.

Frames come out with the recording seconds the live reader gave them (:class:`ingest.archive.SegmentClock`), so
an event's clips, explanation frames and review clip line up with what was scored. Every segment a read touches
is decoded whole and checked against its index line (frame count, decode errors): a missing, corrupt or
truncated segment raises :class:`ingest.errors.ArchiveError` naming the file and the recording seconds it held,
and nothing else in the archive is affected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest._decoding import ErrorLog, decoded_frames
from ingest._media import frame_to_rgb
from ingest.archive import (
    SEGMENT_SUFFIX,
    ArchiveIndex,
    RemovedSpan,
    Segment,
    append_entries,
    locked,
    read_index,
    reason,
)
from ingest.errors import ArchiveError

log = logging.getLogger(__name__)

__all__ = ["ArchivedFrame", "iter_archive_frames", "read_archive_frames", "recover_archive"]

#: frames whose recording time is this close to a wanted time are that time (the clock maps to 1/90000 s)
_MATCH_SECONDS = 1e-3


@dataclass(frozen=True)
class ArchivedFrame:
    """A decoded frame of the archive: recording seconds, the frame, clockwise degrees to show it upright."""

    t: float
    frame: av.VideoFrame
    rotation: int


def iter_archive_frames(directory: str | os.PathLike[str], start: float, end: float, *,
                        index: ArchiveIndex | None = None) -> Iterator[ArchivedFrame]:
    """Frames whose recording time lies in ``[start, end)``, in time order, from the closed segments.

    Outages yield nothing (no frame was received then); a span retention removed, a segment still being
    written, a missing file or a damaged one raise :class:`ArchiveError`.
    """
    folder = Path(directory)
    index = index if index is not None else read_index(folder)
    for span in index.removed_within(start, end):
        raise ArchiveError(f"recording seconds {span.start:.2f}-{span.end:.2f} are no longer archived "
                           f"({span.reason})")
    segments = index.overlapping(start, end)
    if not segments:
        raise ArchiveError(f"no archived video between {start:.2f} s and {end:.2f} s")
    for segment in segments:
        if not segment.closed:
            raise ArchiveError(f"segment {segment.file} (from {segment.start:.2f} s) is still being written")
        yield from _segment_frames(folder, segment, start, end)


def read_archive_frames(directory: str | os.PathLike[str], times: Sequence[float], *, size: tuple[int, int],
                        index: ArchiveIndex | None = None) -> np.ndarray:
    """The archived frames at ``times`` (recording seconds, as the live reader gave them), uint8
    ``[N, H, W, 3]`` RGB upright at ``size`` = (width, height), in the order asked."""
    if not times:
        return np.zeros((0, size[1], size[0], 3), dtype=np.uint8)
    order = sorted(range(len(times)), key=lambda i: times[i])
    lo, hi = times[order[0]], times[order[-1]]
    out: list[np.ndarray | None] = [None] * len(times)
    reformatter = VideoReformatter()
    last: tuple[ArchivedFrame, np.ndarray] | None = None  # a frame asked for twice is converted once

    def image(item: ArchivedFrame) -> np.ndarray:
        nonlocal last
        if last is None or last[0] is not item:
            last = (item, frame_to_rgb(item.frame, size, item.rotation, reformatter))
        return last[1]

    k, prev = 0, None
    for item in iter_archive_frames(directory, lo - _MATCH_SECONDS, hi + _MATCH_SECONDS, index=index):
        while k < len(order) and times[order[k]] <= item.t + _MATCH_SECONDS:
            wanted = times[order[k]]
            best = item if prev is None or abs(item.t - wanted) <= abs(prev.t - wanted) else prev
            if abs(best.t - wanted) > _MATCH_SECONDS:
                raise ArchiveError(f"no archived frame at {wanted:.3f} s (the nearest is at {best.t:.3f} s)")
            out[order[k]] = image(best)
            k += 1
        prev = item
    if k < len(order):
        raise ArchiveError(f"no archived frame at {times[order[k]]:.3f} s")
    return np.stack([img for img in out if img is not None])


def _segment_frames(folder: Path, segment: Segment, start: float, end: float) -> Iterator[ArchivedFrame]:
    """Decode the whole segment (its check needs every frame), yielding those in ``[start, end)``."""
    path = folder / segment.file
    what = f"segment {segment.file} (recording {segment.start:.2f}-{segment.span_end:.2f} s)"
    if not path.is_file():
        raise ArchiveError(f"{what} is missing from the archive")
    try:
        container = av.open(str(path), mode="r", format="mpegts")
    except (av.FFmpegError, OSError) as exc:
        raise ArchiveError(f"{what} is unreadable ({reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise ArchiveError(f"{what} is corrupt: it holds no video")
        stream = container.streams.video[0]
        file_time_base = Fraction(stream.time_base) if stream.time_base is not None else None
        if file_time_base is None:
            raise ArchiveError(f"{what} is corrupt: it has no time base")
        errors = ErrorLog(segment.file, None)
        decoded = corrupt = 0
        try:
            for frame in decoded_frames(container, stream, errors):
                if frame.pts is None:
                    continue
                decoded += 1
                corrupt += bool(frame.is_corrupt)
                t = segment.clock.seconds(int(frame.pts), file_time_base)
                if start - 1e-9 <= t < end:
                    yield ArchivedFrame(t, frame, segment.rotation)
        except av.FFmpegError as exc:
            raise ArchiveError(f"{what} is corrupt ({reason(exc)})") from None
    if decoded < segment.frames or errors.bad_packets or corrupt:
        problems = [f"{decoded} of its {segment.frames} frames decodable"]
        if errors.bad_packets:
            problems.append(f"{errors.bad_packets} damaged packets")
        if corrupt:
            problems.append(f"{corrupt} frames decoded with errors")
        raise ArchiveError(f"{what} is corrupt or truncated: {', '.join(problems)}")


def recover_archive(directory: str | os.PathLike[str]) -> list[Segment]:
    """Close the segments an earlier writer left open (it died), from what their files hold; returns them.
    Only for an archive no writer is writing (:class:`ingest.archive_writer.StreamArchiveWriter` calls it holding
    the archive's writer lock).

    The readable packets are copied into a clean file (the last one, possibly cut short by the kill, and any the
    demuxer found damaged are left out), so the segment reads back without errors. A segment none of whose
    frames is readable is removed and its span noted. Segment files the index never named (the writer died before
    their first frame was timed) are deleted: nothing could place them in time.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    recovered: list[Segment] = []
    with locked(folder):
        index = read_index(folder)
        entries: list[dict] = []
        for segment in index.segments:
            if segment.closed:
                continue
            closed = _recover_segment(folder, segment)
            if closed is None:
                span = RemovedSpan(segment.start, segment.start, "unreadable after its writer died")
                entries += [{"type": "removed", "start": span.start, "end": span.end, "reason": span.reason,
                             "segments": 1}, {"type": "drop", "seq": segment.seq}]
                (folder / segment.file).unlink(missing_ok=True)
                log.warning("%s: segment %s left by a dead writer is unreadable; removed", folder, segment.file)
            else:
                entries.append(closed.close_entry())
                recovered.append(closed)
                log.info("%s: segment %s recovered (%d frames, %.2f-%.2f s)", folder, segment.file, closed.frames,
                         closed.start, closed.span_end)
        if entries:
            append_entries(folder, entries, lock=False)
        named = {segment.file for segment in index.segments}
        for path in folder.glob(f"seg-*{SEGMENT_SUFFIX}"):
            if path.name not in named:
                log.warning("%s: segment file %s was never indexed; deleted", folder, path.name)
                path.unlink(missing_ok=True)
    return recovered


def _recover_segment(folder: Path, segment: Segment) -> Segment | None:
    """Copy the complete packets of a dead writer's segment into a clean file; its closed index entry, or None."""
    path = folder / segment.file
    tmp = path.with_name(f".{path.name}.recovered")
    try:
        packets = _copy_complete_packets(path, tmp)
        if packets == 0:
            return None
        os.replace(tmp, path)
        frames, first, last = _scan(path, segment)
    except (av.FFmpegError, OSError, ArchiveError) as exc:
        log.warning("%s: recovering %s failed (%s)", folder, segment.file, exc)
        return None
    finally:
        tmp.unlink(missing_ok=True)
    if frames == 0 or first is None or last is None:
        return None
    interval = 1.0 / segment.fps if segment.fps > 0 else 0.04
    end = last + interval
    end_wall = None
    if segment.start_wall is not None:
        end_wall = (datetime.fromisoformat(segment.start_wall) + timedelta(seconds=end - segment.start)).isoformat()
    return replace(segment, start=min(segment.start, first), end=end, end_wall=end_wall, frames=frames,
                   bytes=path.stat().st_size, recovered=True)


def _copy_complete_packets(src: Path, dst: Path) -> int:
    """Remux ``src`` into ``dst`` without its last packet and damaged ones; the number of packets copied."""
    if not src.is_file() or src.stat().st_size == 0:
        return 0
    with av.open(str(src), mode="r", format="mpegts") as inp:
        if not inp.streams.video:
            return 0
        stream = inp.streams.video[0]
        packets = []
        try:
            for packet in inp.demux(stream):
                if packet.size > 0 and not packet.is_corrupt:
                    packets.append(packet)
        except av.FFmpegError as exc:  # cut short: keep what came before
            log.info("%s: read stopped early (%s)", src.name, exc)
        packets = packets[:-1]  # the one in flight when the writer died may be incomplete
        # from the first keyframe only (the rest cannot be decoded)
        first_key = next((i for i, p in enumerate(packets) if p.is_keyframe), None)
        if first_key is None:
            return 0
        packets = packets[first_key:]
        with av.open(str(dst), mode="w", format="mpegts", options={"mpegts_copyts": "1"}) as out:
            ostream = out.add_stream_from_template(stream)
            for packet in packets:
                packet.stream = ostream
                out.mux(packet)
        return len(packets)


def _scan(path: Path, segment: Segment) -> tuple[int, float | None, float | None]:
    """(decodable frames, first and last recording seconds) of a segment file."""
    frames, first, last = 0, None, None
    with av.open(str(path), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        file_time_base = Fraction(stream.time_base)
        for frame in decoded_frames(container, stream, ErrorLog(path.name, None)):
            if frame.pts is None:
                continue
            t = segment.clock.seconds(int(frame.pts), file_time_base)
            frames += 1
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
    return frames, first, last
