"""Probe a video file: validate it early and describe it.

Why: an upload should be refused in milliseconds with a message the uploader understands, not after a
worker has spent minutes decoding garbage. :func:`probe` reads the container header and decodes at most
the first few packets; dimension and duration limits are checked *before* any frame is decoded so a
hostile "100000x100000" header never allocates a frame.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av

from ingest._media import (
    frame_rate,
    normalise_rotation,
    open_input,
    rotation_from_frame,
    rotation_from_metadata,
    video_stream,
)
from ingest.errors import InvalidVideoError

log = logging.getLogger(__name__)

# How many packets probe() may feed the decoder looking for a first frame: enough for B-frame
# reordering and frame-threaded decoder delay, small enough to stay fast on a corrupt file.
_MAX_PROBE_PACKETS = 256
# No camera records faster than this; a header claiming more frames per second is corrupt or hostile
# (and a frame index sized from it could exhaust memory, e.g. in decord's reader).
_MAX_PLAUSIBLE_FPS = 1000.0


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learned about a video file.

    Attributes:
        path: the file probed, as a string.
        container: FFmpeg demuxer name (e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``).
        codec: FFmpeg decoder name of the video stream (e.g. ``"h264"``).
        width, height: display size in pixels, *after* rotation.
        fps: average frame rate in frames per second.
        duration: seconds, from the container (or estimated from frame count / fps).
        frame_count: frames stated by the container, or None when it does not say.
        rotation: clockwise degrees (0/90/180/270) applied to the coded picture to display it upright.
        creation_time: container ``creation_time`` as a UTC-aware datetime, or None.
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float
    frame_count: int | None
    rotation: int
    creation_time: datetime | None


def probe(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = 8192 * 4320,
    max_duration: float = 7 * 24 * 3600,
    max_frames: int | None = None,
) -> VideoInfo:
    """Validate ``path`` as a decodable video and return its :class:`VideoInfo`.

    Args:
        path: video file.
        max_pixels: refuse pictures with more pixels than this (default 8K UHD).
        max_duration: refuse recordings longer than this many seconds (default one week).
        max_frames: refuse headers claiming more frames than this (default ``max_duration`` at
            1000 fps). A header claiming more than 1000 frames per second of its duration is refused too.

    Raises:
        InvalidVideoError: with a user-facing message: "file is empty", "not a video file: ...",
            "no video stream", "unsupported codec ...", "video dimensions WxH exceed the limit",
            "video duration ... exceeds the limit", "video claims N frames ...", "video header claims N
            frames in S s ...", "could not decode any frame", ...
    """
    p = Path(path)
    with open_input(p) as container:
        stream = video_stream(container, p.name)
        codec_name = _codec_name(stream, p.name)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width <= 0 or height <= 0:
            raise InvalidVideoError(f"invalid video dimensions {width}x{height} in {p.name}")
        if width * height > max_pixels:
            raise InvalidVideoError(f"video dimensions {width}x{height} exceed the limit of {max_pixels} pixels")
        fps = frame_rate(stream)
        frame_count = int(stream.frames) if stream.frames and stream.frames > 0 else None
        duration = _duration(container, stream, fps, frame_count)
        if duration > max_duration:
            raise InvalidVideoError(f"video duration {duration:.0f} s exceeds the limit of {max_duration:.0f} s")
        limit = max_frames if max_frames is not None else int(max_duration * _MAX_PLAUSIBLE_FPS)
        _check_frame_count(frame_count, duration, limit)
        first = _first_frame(container, stream, p.name)
        rotation = rotation_from_metadata(stream.metadata)
        if rotation is None:
            rotation = rotation_from_frame(first)
        if rotation in (90, 270):
            width, height = height, width
        info = VideoInfo(
            path=str(p),
            container=container.format.name,
            codec=codec_name,
            width=width,
            height=height,
            fps=fps,
            duration=duration,
            frame_count=frame_count,
            rotation=normalise_rotation(rotation),
            creation_time=_creation_time(container.metadata) or _creation_time(stream.metadata),
        )
    log.debug("probed %s", info)
    return info


def _check_frame_count(frame_count: int | None, duration: float, limit: int) -> None:
    """Refuse absurd frame counts claimed by the header, before anything is decoded."""
    if frame_count is None:
        return
    if frame_count > limit:
        raise InvalidVideoError(f"video claims {frame_count} frames, more than the limit of {limit}")
    if duration > 0 and frame_count > duration * _MAX_PLAUSIBLE_FPS + 1:
        raise InvalidVideoError(
            f"video header claims {frame_count} frames in {duration:.1f} s (over {_MAX_PLAUSIBLE_FPS:.0f} fps): "
            "corrupt or forged header"
        )


def _codec_name(stream: av.video.stream.VideoStream, name: str) -> str:
    """Name of the decoder, refusing streams FFmpeg has no decoder for."""
    try:
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else None
    except (av.FFmpegError, ValueError):
        codec = None
    if not codec:
        raise InvalidVideoError(f"unsupported codec in {name}: no decoder available for its video stream")
    return str(codec)


def _duration(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    fps: float,
    frame_count: int | None,
) -> float:
    """Duration in seconds: stream duration, else container duration, else frames / fps."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * Fraction(stream.time_base))
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    if frame_count and fps > 0:
        return frame_count / fps
    return 0.0


def _first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str
) -> av.VideoFrame:
    """Decode the first frame, proving the stream is really decodable.

    Why decode at all: a file cut before its first keyframe, or with a valid header over garbage
    payload, passes every header check and would only fail later inside a worker.
    """
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                log.debug("probe: undecodable packet %d in %s: %s", packets, name, exc)
                frames = []
            if frames:
                return frames[0]
            if packets >= _MAX_PROBE_PACKETS:
                break
    except av.FFmpegError as exc:
        log.debug("probe: demuxing %s stopped: %s", name, exc)
    raise InvalidVideoError(f"could not decode any frame of {name} (file truncated or corrupt)")


def _creation_time(metadata: dict[str, str]) -> datetime | None:
    """Parse a ``creation_time`` tag (ISO 8601, usually ``...Z``) into a UTC-aware datetime.

    Cameras with an unset clock write the MP4 epoch (1904) or the Unix epoch; those are "unknown",
    not real dates, so anything before 1971 becomes None.
    """
    raw = metadata.get("creation_time")
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "T"))
    except ValueError:
        log.warning("ignoring unparseable creation_time %r", raw)
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value if value.year >= 1971 else None
