"""Decode frames from a video file: streaming with time-based sampling, and random access.

Why PyAV for streaming: it lets us decode every packet (the codec needs them all) but pay for colour
conversion and scaling only on the frames we keep, with swscale doing both in one C pass. Sampling is
by presentation time, not by frame count, so variable-frame-rate phone or camera recordings still give
evenly spaced samples. Decord is used for batched random access (:func:`read_frames`) because its
frame index makes scattered reads cheap; PyAV is the fallback whenever decord fails or cannot be
trusted (decord mishandles rotated files: it returns 4-channel frames and fails on batches).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest._decoding import ErrorLog, decoded_frames, prepend
from ingest._media import (
    check_size,
    frame_rate,
    frame_to_rgb,
    open_input,
    rotation_from_frame,
    rotation_from_metadata,
    video_stream,
)
from ingest._reader import SampledReader, configure_threads
from ingest.errors import DecodeError
from ingest.probe import probe
from ingest.report import IngestReport

log = logging.getLogger(__name__)

__all__ = ["iter_frames", "read_frame", "read_frames"]

# read_frames() seeks instead of decoding forward when the next wanted time is this far ahead.
_SEEK_AHEAD_SECONDS = 2.0
# read_frames(backend="auto") uses decord above this many distinct times. Measured on a 120 s 320x240
# H.264 file: decord's open (index scan) costs ~50 ms, so PyAV wins for a handful of frames, while
# decord is 1.3-2.5x faster for 100 random frames or whole-file reads.
_DECORD_MIN_FRAMES = 8


class _Clock:
    """Seconds of frames from their pts (or a frame counter), for random access in :func:`read_frames`.

    Unlike :class:`ingest._timeline.Timeline` it tracks no gaps: after a seek, times jump on purpose.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.fps = frame_rate(stream)
        self.time_base = Fraction(stream.time_base) if stream.time_base is not None else None
        self.origin: int | None = stream.start_time if stream.start_time is not None else None
        self.count = 0

    def __call__(self, frame: av.VideoFrame) -> tuple[int, float]:
        if frame.pts is not None and self.time_base is not None and self.origin is None:
            self.origin = frame.pts
        t = self.seconds_of(frame)
        if t is None:
            t = self.count / self.fps if self.fps > 0 else float(self.count)
        index = self.count
        self.count += 1
        return index, t

    def seconds_of(self, frame: av.VideoFrame) -> float | None:
        """The frame's time from its pts, without counting it; None without a pts (or before any origin)."""
        if frame.pts is None or self.time_base is None or self.origin is None:
            return None
        return max(0.0, float((frame.pts - self.origin) * self.time_base))


def iter_frames(
    path: str | os.PathLike[str],
    *,
    sample_fps: float | None,
    size: tuple[int, int] | None,
    report: IngestReport | None = None,
    threads: int | None = None,
    skip_unneeded: bool = False,
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Stream ``(source frame index, seconds, uint8 [H, W, 3] RGB)`` tuples from a video file.

    Args:
        path: video file.
        sample_fps: keep frames about ``1 / sample_fps`` seconds apart (by presentation time);
            None keeps every frame.
        size: (width, height) of the yielded frames, after rotation; None keeps the display size.
        report: optional; receives corrupt-packet/truncation messages, gaps, decoded frame count and
            decoded duration (an extension of the shared contract, used by :func:`ingest.clips.iter_clips`).
        threads: decoder threads (None: FFmpeg's default, one per core). For benchmarks and for
            callers running several decodes side by side.
        skip_unneeded: never decode H.264 frames that neither the sampler keeps nor any kept frame
            references (non-reference B-frames, GOPs without a kept frame). Off by default: on an
            intact file it yields exactly the same frames (tested), but on a damaged file a packet that
            fails to decode is missing instead of replaced by its neighbour. Measured 1.3-1.8x less CPU
            at 8 of 30 fps on x264 files with B-frames (benchmarks/decode.py); no gain on streams
            without B-frames (most IP cameras) unless the sampling is sparser than the keyframe
            interval. See :mod:`ingest._plan`.

    Every needed packet is decoded, but only kept frames are converted and scaled (swscale, one pass).
    Rotation from the display matrix or ``rotate`` tag is applied. Corrupt packets are skipped with a
    warning; a truncated file yields what decodes; a file that changes while it is read (still being
    written) yields what was there and says so in the report.

    Raises:
        InvalidVideoError: the file cannot be opened as a video at all.
    """
    size = check_size(size)
    if sample_fps is not None and not sample_fps > 0:
        raise ValueError(f"sample_fps must be positive or None, got {sample_fps!r}")
    p = Path(path)
    with open_input(p) as container:
        before = file_identity(p)
        stream = video_stream(container, p.name)
        configure_threads(stream, threads)
        reader = SampledReader(container, stream, sample_fps=sample_fps, report=report, name=p.name)
        for index, t, frame in reader.kept(skip_unneeded=skip_unneeded):
            yield index, t, reader.to_rgb(frame, size)
        check_unchanged(p, before, reader)
        reader.finish()


def file_identity(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_unchanged(path: Path, before: tuple[int, int] | None, reader: SampledReader) -> None:
    """Report a file that changed while it was read: it was still being written (or replaced).

    Why: a watch folder or an import can pick up a recording that a camera is still writing; FFmpeg then
    reads up to wherever the file ended at that moment. The ingest is partial, and the reason must say so
    rather than look like a clean, short recording.
    """
    after = file_identity(path)
    if before is not None and after != before:
        reader.errors.add(
            f"the file changed while it was being read (still being written?): read up to "
            f"{reader.timeline.decoded_until:.2f} s; ingest it again once it is complete"
        )


def read_frame(path: str | os.PathLike[str], t: float, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """The uint8 ``[H, W, 3]`` RGB frame whose presentation time is nearest ``t`` seconds.

    Uses a PyAV seek to the preceding keyframe (a single read does not amortise decord's index scan).
    Times past the end give the last decodable frame.
    """
    return read_frames(path, [t], size=size, backend="pyav")[0]


def read_frames(
    path: str | os.PathLike[str],
    times: Sequence[float],
    *,
    size: tuple[int, int] | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Frames nearest each of ``times`` (seconds), as uint8 ``[len(times), H, W, 3]`` RGB, in input order.

    Args:
        path: video file.
        times: seconds from the start of the recording, any order, duplicates allowed.
        size: (width, height) after rotation; None keeps the display size.
        backend: ``"auto"`` (decord for more than a few frames of an unrotated file, PyAV otherwise
            or when decord fails), ``"decord"`` or ``"pyav"``. (An extension of the shared contract, for tests
            and benchmarks.)

    Raises:
        InvalidVideoError: the file is not a readable video.
        DecodeError: no frame at all could be decoded for the requested times.
    """
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown backend {backend!r}")
    size = check_size(size)
    wanted = np.asarray(list(times), dtype=np.float64)
    info = probe(path)
    if wanted.size == 0:
        w, h = size if size is not None else (info.width, info.height)
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    use_decord = backend == "decord" or (backend == "auto" and len(np.unique(wanted)) > _DECORD_MIN_FRAMES)
    if use_decord and info.rotation == 0:
        try:
            return _read_decord(path, wanted, size)
        except Exception as exc:  # decord raises its own error types, or worse; fall back on anything
            if backend == "decord":
                raise DecodeError(f"decord could not read {Path(path).name}: {exc}") from exc
            log.info("decord failed on %s (%s); falling back to PyAV", Path(path).name, exc)
    elif backend == "decord":
        raise DecodeError("decord does not handle rotated videos correctly; use the PyAV backend")
    return _read_pyav(path, wanted, size)


def _nearest_indices(starts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of the start time nearest each wanted time (ties go to the earlier frame)."""
    right = np.clip(np.searchsorted(starts, wanted, side="left"), 0, len(starts) - 1)
    left = np.clip(right - 1, 0, len(starts) - 1)
    take_left = np.abs(wanted - starts[left]) <= np.abs(starts[right] - wanted)
    return np.where(take_left, left, right).astype(np.int64)


def _read_decord(path: str | os.PathLike[str], wanted: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    import decord  # imported lazily: optional at run time, and slow to import

    w, h = size if size is not None else (-1, -1)
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=0)
    n = len(reader)
    if n == 0:
        raise DecodeError("decord found no frames")
    starts = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    starts = starts - starts[0]
    indices = _nearest_indices(starts, wanted)
    # Ask for each frame once and in file order: decord seeks back for every out-of-order index.
    unique, inverse = np.unique(indices, return_inverse=True)
    batch = reader.get_batch(unique.tolist()).asnumpy()
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[0] != len(unique):
        raise DecodeError(f"decord returned an unexpected shape {batch.shape}")
    batch = batch[inverse.reshape(-1)]
    if size is not None and (batch.shape[2], batch.shape[1]) != size:
        raise DecodeError(f"decord returned frames of {batch.shape[2]}x{batch.shape[1]}, not {size}")
    return np.ascontiguousarray(batch, dtype=np.uint8)


#: how far before the time asked for a verified seek retries (seconds; None: from the start)
_SEEK_BACK_OFF: tuple[float | None, ...] = (0.0, 2.0, 10.0, None)


class _PyAVCursor:
    """Forward-only decoding position with one frame of look-behind, seeking when far behind.

    Why: for sorted target times we want each frame decoded at most once, and the frame nearest a
    target may be the one just before it, so the previous frame is kept.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
        self.container = container
        self.stream = stream
        self.errors = ErrorLog(Path(container.name).name, None)
        self.clock = _Clock(stream)
        self.frames: Iterator[av.VideoFrame] | None = None
        self.prev: tuple[float, av.VideoFrame] | None = None
        self.cur: tuple[float, av.VideoFrame] | None = None
        self.exhausted = False

    def _seek(self, t: float) -> None:
        if self.frames is not None:
            self.frames.close()  # type: ignore[attr-defined]
        time_base = self.clock.time_base
        if time_base is not None and t > _SEEK_AHEAD_SECONDS:
            self.frames = self._frames_from_at_most(t, time_base)
        else:
            if self.frames is not None:
                self.container.seek(self.stream.start_time or 0, stream=self.stream, backward=True)
            self.frames = decoded_frames(self.container, self.stream, self.errors)
        self.prev = self.cur = None
        self.exhausted = False

    def _frames_from_at_most(self, t: float, time_base: Fraction) -> Iterator[av.VideoFrame]:
        """Decoded frames from a frame at or before ``t`` seconds.

        Demuxers seek by their own index (MPEG-TS by byte position, AVI by decode time), so "backward to ``t``"
        can land after it; then the frames before the landing point would be missing and every time before it
        would get the landing frame. The first decoded frame is checked, and the seek goes further back
        (:data:`_SEEK_BACK_OFF`, at last to the start) until it does not land after ``t``.
        """
        origin = self.stream.start_time or 0
        for back in _SEEK_BACK_OFF:
            start = t - back if back is not None else 0.0
            target = int(start / time_base) + origin if start > 0 else origin
            self.container.seek(target, stream=self.stream, backward=True)
            frames = decoded_frames(self.container, self.stream, self.errors)
            first = next(frames, None)
            if first is None:  # landed at the end: try from further back
                if back is None:
                    return frames
            elif back is None or (landed := self.clock.seconds_of(first)) is None or landed <= t:
                return prepend(first, frames)
            else:
                log.debug("%s: seek for %.3f s landed at %.3f s; further back", self.container.name, t, landed)
            frames.close()  # type: ignore[attr-defined]
        return iter(())

    def nearest(self, t: float) -> tuple[float, av.VideoFrame] | None:
        behind = self.prev is not None and t < self.prev[0]
        far = self.cur is not None and t - self.cur[0] > _SEEK_AHEAD_SECONDS
        if self.frames is None or behind or far:
            self._seek(t)
        assert self.frames is not None
        while not self.exhausted and (self.cur is None or self.cur[0] < t):
            frame = next(self.frames, None)
            if frame is None:
                self.exhausted = True
                break
            self.prev, self.cur = self.cur, (self.clock(frame)[1], frame)
        candidates = [c for c in (self.prev, self.cur) if c is not None]
        if not candidates:
            return None
        # With the loop above, prev < t <= cur (or EOF); prefer the earlier frame on a tie.
        return min(candidates, key=lambda c: (abs(c[0] - t), c[0]))


def _read_pyav(path: str | os.PathLike[str], wanted: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    p = Path(path)
    out: list[np.ndarray | None] = [None] * len(wanted)
    converted: tuple[av.VideoFrame, np.ndarray] | None = None  # holding the frame keeps its identity unique
    with open_input(p) as container:
        stream = video_stream(container, p.name)
        stream.thread_type = "AUTO"
        rotation = rotation_from_metadata(stream.metadata)
        reformatter = VideoReformatter()
        cursor = _PyAVCursor(container, stream)
        for i in np.argsort(wanted, kind="stable"):
            hit = cursor.nearest(float(wanted[i]))
            if hit is None:
                raise DecodeError(f"could not decode a frame near {wanted[i]:.2f} s of {p.name}")
            frame = hit[1]
            if rotation is None:
                rotation = rotation_from_frame(frame)
            if converted is None or converted[0] is not frame:
                converted = (frame, frame_to_rgb(frame, size, rotation, reformatter))  # duplicates reuse it
            out[i] = converted[1]
    return np.stack([o for o in out if o is not None])
