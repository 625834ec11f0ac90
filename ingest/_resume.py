"""Resume cutting a file at clip ``k`` with exactly the clips a full run would give, without decoding 0..k-1.

How: clip boundaries depend only on frame *times* (sampling, gaps, stride grid), never on pixels. So a
scan reads packets only (no decoding: a few seconds for an hour of video), puts their timestamps in
presentation order through the same :class:`ingest._timeline.Timeline` and :class:`ingest._cutter.Cutter`
as a full run, and stops where clip ``k - 1`` completes. At that point it knows which sampled frames the
next clip already holds (clips may overlap) and the pts of the last frame accounted for. The decode then
seeks to the nearest keyframe before the first of those frames, decodes forward, fills their pixels,
discards everything else up to the stop point, and continues exactly like a full run.

Exact for intact files (tested pixel for pixel). Caveat: on a file damaged *before* clip ``k``, a full
run loses the frames of undecodable packets (which can move later clip boundaries) while the scan still
counts them; resumed boundaries may then differ from the first run's. Files whose packets carry no
timestamps (raw H.264 elementary streams) or that cannot seek fall back to decoding from the start
without yielding clips before ``k`` -- exact, but not faster.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import av

from ingest._cutter import Cutter, Sample
from ingest._decoding import ErrorLog, decoded_frames, demux, prepend
from ingest._plan import REORDER_WINDOW
from ingest._reader import Kept, SampledReader

log = logging.getLogger(__name__)

# Keyframe timestamps remembered during the scan (the seek needs one shortly before the resume point;
# a bound keeps a 24-hour scan from growing a list without need).
_MAX_KEYFRAMES = 4096


class ResumeUnsupported(Exception):
    """The file cannot be resumed by scan and seek: packets without pts, or a demuxer that cannot seek.

    Raised before any clip is yielded; the caller decodes from the start instead.
    """


@dataclass
class ResumePoint:
    """Where the scan stopped.

    Attributes:
        last_pts: pts of the last frame the timeline has accounted for.
        fill: pts -> source frame index of the samples the cutter holds without pixels.
        keyframes: pts of keyframes seen, in file order (seek candidates).
        reached: False when the file ended before clip ``k - 1`` completed (nothing left to yield).
    """

    last_pts: int | None
    fill: dict[int, int] = field(default_factory=dict)
    keyframes: list[int] = field(default_factory=list)
    reached: bool = True


def scan(reader: SampledReader, cutter: Cutter, start_index: int) -> ResumePoint:
    """Advance ``reader.timeline`` and ``cutter`` on packet timestamps until clip ``start_index - 1`` completes.

    Raises:
        ResumeUnsupported: a packet has no pts (the caller must decode from the start instead).
    """
    scratch = ErrorLog(reader.name, None)  # demux problems are reported by the decode that follows
    keyframes: deque[int] = deque(maxlen=_MAX_KEYFRAMES)
    recent: deque[tuple[int, int]] = deque(maxlen=cutter.n + 1)  # (frame index, pts) of recent samples
    heap: list[int] = []

    def account(pts: int) -> bool:
        index, t, keep = reader.timeline.step(pts)
        if not keep:
            return False
        recent.append((index, pts))
        done = cutter.push(Sample(index, t, None))
        return done is not None and done[0] == start_index - 1

    for packet in demux(reader.container, reader.stream, scratch):
        if packet.pts is None:
            raise ResumeUnsupported(f"{reader.name}: packet without timestamp")
        if packet.is_keyframe:
            keyframes.append(packet.pts)
        if packet.is_discard:
            continue
        heapq.heappush(heap, packet.pts)
        while len(heap) > REORDER_WINDOW:
            if account(heapq.heappop(heap)):
                return _point(reader, cutter, recent, keyframes)
    while heap:
        if account(heapq.heappop(heap)):
            return _point(reader, cutter, recent, keyframes)
    return ResumePoint(last_pts=reader.timeline.last_pts, reached=False)


def _point(reader: SampledReader, cutter: Cutter, recent: deque[tuple[int, int]], keyframes: deque[int]) -> ResumePoint:
    by_index = dict(recent)
    fill = {by_index[s.index]: s.index for s in cutter.buffer}
    return ResumePoint(last_pts=reader.timeline.last_pts, fill=fill, keyframes=list(keyframes))


def resumed_frames(reader: SampledReader, cutter: Cutter, point: ResumePoint, size: tuple[int, int]) -> Iterator[Kept]:
    """Seek back, refill the cutter's held samples with pixels, then yield kept frames after the scan point."""
    assert point.last_pts is not None
    first_needed = min([*point.fill, point.last_pts])
    frames = _seek_before(reader, first_needed, point.keyframes)
    held = {s.index: s for s in cutter.buffer}

    def replay(frame: av.VideoFrame) -> None:
        index = point.fill.get(frame.pts)
        if index is not None and index in held:
            held[index].image = reader.to_rgb(frame, size)

    replay_until = point.last_pts
    refilled = False
    for kept in reader.follow(frames, replay_until=replay_until, replay=replay):
        if not refilled:
            refilled = True
            _check_refilled(reader, cutter)
        yield kept
    if not refilled:
        _check_refilled(reader, cutter)


def _check_refilled(reader: SampledReader, cutter: Cutter) -> None:
    missing = [s.index for s in cutter.buffer if s.image is None]
    if missing:
        reader.errors.add(
            f"could not re-read source frames {missing} when resuming; the clip that holds them is skipped"
        )
        cutter.break_segment()


def _seek_before(reader: SampledReader, pts: int, keyframes: list[int]) -> Iterator[av.VideoFrame]:
    """Decoded frames from a keyframe at or before ``pts`` (verified), falling back to earlier targets.

    Why verify: demuxers seek by their own index (MP4: decode timestamps; MPEG-TS: byte positions), so
    "backward to ``pts``" can land after it. The first decoded frame must not be later than ``pts``.

    Raises:
        ResumeUnsupported: the demuxer refused to seek.
    """
    candidates = [k for k in reversed(keyframes) if k <= pts][:2]
    targets: list[int | None] = [*candidates, None]
    for target in targets:
        start = reader.stream.start_time or 0
        try:
            reader.container.seek(target if target is not None else start, stream=reader.stream, backward=True)
        except av.FFmpegError as exc:
            raise ResumeUnsupported(f"{reader.name}: cannot seek ({exc})") from exc
        frames = decoded_frames(reader.container, reader.stream, reader.errors)
        first = next(frames, None)
        if first is None:
            continue
        if first.pts is None or first.pts <= pts or target is None:
            return prepend(first, frames)
        log.debug("%s: seek to %s landed at pts %s > %s; seeking further back", reader.name, target, first.pts, pts)
        frames.close()
    return iter(())

