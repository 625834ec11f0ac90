"""Review clips: a short, browser-playable MP4 of an event with some context before and after.

Why re-encode instead of cutting with ``-c copy``: a stream copy can only start at a keyframe (seconds
off), keeps the source codec (HEVC, MJPEG and 4:2:2 do not play in every browser) and keeps rotation as
metadata that some players ignore. Re-encoding gives exactly the requested window, H.264 High/yuv420p
(plays everywhere), upright pixels, an optional smaller size, and ``moov`` before ``mdat``
(``movflags=+faststart``) so the player can start and seek before the whole file has arrived.
Review clips are silent: audio from a patient room is not needed to review a video event.

A live stream's events are cut the same way from the stream's archive (:func:`export_archive_clip`): the frames
come from the segment files holding the window, timed with the live reader's own recording seconds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest._decoding import ErrorLog, decoded_frames
from ingest._media import frame_to_rgb, open_input, rotation_from_frame, rotation_from_metadata, video_stream
from ingest.archive import read_index
from ingest.archive_reader import iter_archive_frames
from ingest.errors import ArchiveError, DecodeError
from ingest.probe import probe

log = logging.getLogger(__name__)

__all__ = ["ExportedClip", "export_archive_clip", "export_clip", "export_review_clip", "output_size"]

_TIME_BASE = Fraction(1, 90_000)  # MPEG's clock: exact for 24/25/30/60 fps and for variable frame rates


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most ``max_side``, both even (yuv420p needs it)."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


@dataclass(frozen=True)
class ExportedClip:
    """A written review clip: ``path``, and ``start``, the recording second shown at the clip's 0 s.

    ``start`` is the time of the first source frame inside the window (at or after ``start - pre``), so player
    time ``t`` in the clip is recording time ``start + t`` exactly (frame spacing is kept)."""

    path: Path
    start: float
    frames: int


def export_clip(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    start: float,
    end: float,
    *,
    pre: float = 2.0,
    post: float = 2.0,
    max_side: int | None = None,
    crf: int = 23,
) -> Path:
    """Write ``[start - pre, end + post]`` seconds of ``src`` (clamped to the file) as H.264 MP4 at ``dst``.

    Args:
        src: the recording.
        dst: output path (written to a temporary name beside it, then renamed: never half-written).
        start, end: the event, in seconds from the recording start.
        pre, post: seconds of context before and after.
        max_side: scale down so the longer side is at most this many pixels (None: display size).
            Odd sizes are rounded down to even.
        crf: x264 quality (lower is better; 23 is x264's default).

    Returns:
        ``Path(dst)``. Frame times keep the source's spacing (variable frame rates stay variable), the
        first frame is at 0 s, rotation is applied to the pixels. :func:`export_review_clip` also says which
        recording second that first frame is.

    Raises:
        InvalidVideoError: ``src`` is not a readable video.
        ValueError: the window is empty (``end < start``, negative padding, or it lies past the end).
        DecodeError: no frame of the window could be decoded.
    """
    return export_review_clip(src, dst, start, end, pre=pre, post=post, max_side=max_side, crf=crf).path


def export_review_clip(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    start: float,
    end: float,
    *,
    pre: float = 2.0,
    post: float = 2.0,
    max_side: int | None = None,
    crf: int = 23,
) -> ExportedClip:
    """:func:`export_clip`, answering where the clip starts in the recording (arguments and errors alike)."""
    if end < start or pre < 0 or post < 0:
        raise ValueError("need start <= end and non-negative pre/post padding")
    info = probe(src)
    a = max(0.0, start - pre)
    b = min(end + post, info.duration) if info.duration > 0 else end + post
    if b <= a:
        raise ValueError(f"the window {a:.2f}-{b:.2f} s lies outside the recording (0-{info.duration:.2f} s)")
    size = output_size(info.width, info.height, max_side)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        written, first = _transcode(Path(src), tmp, a, b, size, info.fps, crf)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s [%.2f, %.2f] s -> %s (%d frames, %dx%d)", Path(src).name, first, b, out, written, *size)
    return ExportedClip(out, first, written)


def export_archive_clip(
    directory: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    start: float,
    end: float,
    *,
    pre: float = 2.0,
    post: float = 2.0,
    max_side: int | None = None,
    crf: int = 23,
) -> ExportedClip:
    """:func:`export_review_clip` for a live stream: the window is cut from its archive
    (:mod:`ingest.archive`), across as many segment files as it spans.

    ``start``/``end`` and the returned ``start`` are recording seconds, the live reader's own: the clip's first
    frame is the first archived frame at or after ``start - pre``, and its player time ``t`` shows recording
    time ``start + t``. An outage inside the window holds the last frame before it (the clock is kept).

    Raises:
        ArchiveError: no archived video in the window, or a segment it needs is missing, removed, still being
            written, corrupt or truncated (the message names it).
        ValueError: ``end < start`` or negative padding.
    """
    if end < start or pre < 0 or post < 0:
        raise ValueError("need start <= end and non-negative pre/post padding")
    index = read_index(directory)
    a, b = max(0.0, start - pre), end + post
    segments = index.overlapping(a, b)
    if not segments:
        raise ArchiveError(f"no archived video between {a:.2f} s and {b:.2f} s")
    a, b = max(a, segments[0].start), min(b, max(s.span_end for s in segments))
    first = segments[0]
    upright = (first.height, first.width) if first.rotation in (90, 270) else (first.width, first.height)
    size = output_size(*upright, max_side)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{threading.get_ident()}.part")  # two cutters never share one
    try:
        frames = ((item.t, item.frame, item.rotation) for item in iter_archive_frames(directory, a, b, index=index))
        written, first_t = _encode(frames, tmp, a, b, size, first.fps, crf, f"the archive in {Path(directory).name}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported archive [%.2f, %.2f] s -> %s (%d frames, %dx%d)", first_t, b, out, written, *size)
    return ExportedClip(out, first_t, written)


def _transcode(src: Path, dst: Path, a: float, b: float, size: tuple[int, int], fps: float,
               crf: int) -> tuple[int, float]:
    """Decode ``[a, b)`` of ``src`` and encode it to ``dst``; returns (frames written, first frame's time)."""
    with open_input(src) as inp:
        stream = video_stream(inp, src.name)
        stream.thread_type = "AUTO"
        time_base = Fraction(stream.time_base) if stream.time_base is not None else None
        origin = stream.start_time or 0
        rotation = rotation_from_metadata(stream.metadata)
        frames = ((_seconds(frame, time_base, origin, index, fps), frame, rotation)
                  for index, frame in enumerate(_frames_from(inp, stream, a, src.name)))
        return _encode(frames, dst, a, b, size, fps, crf, src.name)


def _encode(frames: Iterable[tuple[float, av.VideoFrame, int | None]], dst: Path, a: float, b: float,
            size: tuple[int, int], fps: float, crf: int, name: str) -> tuple[int, float]:
    """Encode the ``(recording seconds, frame, rotation or None)`` in ``[a, b)`` to ``dst`` as H.264 MP4; returns
    (frames written, first frame's time). A rotation of None is read from the first frame's side data.

    Presentation times count from the first frame written (pts 0), not from ``a``: a window starting between
    two frames would otherwise begin with an empty stretch whose length players disagree on (an MP4 edit list
    some honour and some do not), and the clip's 0 s would not be a frame of the recording. Later frames keep
    their spacing, an outage included, so player time ``t`` is recording time ``first + t`` throughout.
    """
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with av.open(str(dst), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        enc = out.add_stream("libx264", rate=rate)
        enc.width, enc.height, enc.pix_fmt = size[0], size[1], "yuv420p"
        enc.time_base = _TIME_BASE
        enc.codec_context.time_base = _TIME_BASE
        enc.options = {"crf": str(crf), "preset": "veryfast", "profile": "high"}

        written, last_pts, first = 0, -1, a
        found_rotation: int | None = None
        reformatter = VideoReformatter()
        for t, frame, rotation in frames:
            if t < a - 1e-6:
                continue
            if t >= b - 1e-6:
                break
            if rotation is None:
                if found_rotation is None:
                    found_rotation = rotation_from_frame(frame)
                rotation = found_rotation
            image = frame_to_rgb(frame, size, rotation, reformatter)
            if written == 0:
                first = t
            pts = max(last_pts + 1, round((t - first) / _TIME_BASE))
            out.mux(enc.encode(_video_frame(image, pts)))
            written, last_pts = written + 1, pts
        if written == 0:
            raise DecodeError(f"no frame between {a:.2f} s and {b:.2f} s of {name} could be decoded")
        out.mux(enc.encode(None))
    return written, first


def _frames_from(
    inp: av.container.InputContainer, stream: av.video.stream.VideoStream, a: float, name: str
) -> Iterator[av.VideoFrame]:
    """Decoded frames from a keyframe at or before ``a`` seconds.

    Why check: demuxers seek by their own index (MP4 by decode time, MPEG-TS by byte position) and can
    land after ``a``; then the window's first frames would be missing. In that case, or when the stream
    has no timestamps, decoding starts from the beginning.
    """
    time_base = Fraction(stream.time_base) if stream.time_base is not None else None
    origin = stream.start_time or 0
    errors = ErrorLog(name, None)
    # Streams without timestamps (raw H.264) have no start time; a failed seek can leave their demuxer
    # at the end, so they are never seeked.
    if time_base is not None and stream.start_time is not None and a > 1.0:
        try:
            inp.seek(origin + int(a / time_base), stream=stream, backward=True)
            frames = decoded_frames(inp, stream, errors)
            first = next(frames, None)
            if first is not None and first.pts is not None and float((first.pts - origin) * time_base) <= a + 1e-6:
                yield first
                yield from frames
                return
            frames.close()
            inp.seek(origin, stream=stream, backward=True)
        except av.FFmpegError as exc:  # not seekable (raw streams): we are still at the start
            log.debug("%s: seek failed (%s); decoding from the start", name, exc)
    yield from decoded_frames(inp, stream, errors)


def _seconds(frame: av.VideoFrame, time_base: Fraction | None, origin: int, index: int, fps: float) -> float:
    if frame.pts is not None and time_base is not None:
        return float((frame.pts - origin) * time_base)
    return index / fps if fps > 0 else float(index)


def _video_frame(image: np.ndarray, pts: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = pts
    frame.time_base = _TIME_BASE
    return frame
