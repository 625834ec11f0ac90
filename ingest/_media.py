"""Low-level PyAV helpers shared by :mod:`ingest.probe` and :mod:`ingest.decode`.

Kept private: they encode three decisions the public modules must agree on --
how a file is opened (and how FFmpeg's failures become :class:`InvalidVideoError` messages),
what "rotation" means (clockwise degrees to turn the coded picture to display it upright, the
convention of the legacy ``rotate`` tag), and how a decoded frame becomes an RGB array of a given size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest.errors import InvalidVideoError

log = logging.getLogger(__name__)

_SNIFF_BYTES = 4096

# Magic numbers of still-image formats that FFmpeg would happily open as a one-frame "video".
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)


def sniff(path: Path) -> None:
    """Refuse files that are obviously not video, from their first bytes only.

    Why: FFmpeg's probing is permissive (it opens a PNG as a one-frame stream and may try to parse a
    text file as a raw format), and its errors are cryptic. Checking the magic bytes first gives the
    uploader a precise message ("it is a PNG image") at the cost of reading 4 KiB.

    Raises:
        InvalidVideoError: missing, unreadable, empty, image or text file.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise InvalidVideoError(f"file not found: {path.name}") from None
    except OSError as exc:
        raise InvalidVideoError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if size == 0 or not head:
        raise InvalidVideoError(f"file is empty: {path.name}")
    for magic, what in _IMAGE_MAGIC:
        if head.startswith(magic) and not (magic == b"BM" and len(head) < 26):
            raise InvalidVideoError(f"not a video file: {path.name} is {what}")
    if _looks_like_text(head):
        raise InvalidVideoError(f"not a video file: {path.name} looks like text")


def _looks_like_text(head: bytes) -> bool:
    """True when the bytes decode as UTF-8 with (almost) only printable characters.

    Every video container starts with binary structures (box sizes, sync codes) containing NUL or
    control bytes within the first few bytes, so a clean printable prefix is a reliable tell.
    """
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the sniff boundary; retry without the last 3 bytes.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return printable / len(text) > 0.97


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning FFmpeg failures into :class:`InvalidVideoError`.

    The caller owns the returned container and must close it (use it as a context manager).
    """
    p = Path(path)
    sniff(p)
    try:
        container = av.open(str(p), mode="r")
    except av.error.InvalidDataError:
        raise InvalidVideoError(
            f"not a video file, or the file is truncated or corrupt: {p.name} (FFmpeg could not read the container)"
        ) from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidVideoError(f"not a video file: {p.name} ({exc})") from None
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in {"image2", "apng"}:
        container.close()
        raise InvalidVideoError(f"not a video file: {p.name} is a still image ({fmt})")
    return container


def video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    """Return the first video stream, or refuse the file with "no video stream"."""
    streams = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        raise InvalidVideoError(f"no video stream in {name}")
    return streams[0]


def frame_rate(stream: av.video.stream.VideoStream) -> float:
    """Average frame rate, falling back to the guessed/base rate (0.0 when nothing is known)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0 and float(rate) < 1000:
            return float(rate)
    return 0.0


def normalise_rotation(degrees: float) -> int:
    """Round an angle to the nearest multiple of 90 and map it into {0, 90, 180, 270}."""
    return int(round(degrees / 90.0)) % 4 * 90


def rotation_from_metadata(metadata: Mapping[str, str]) -> int | None:
    """Clockwise rotation from a legacy ``rotate`` metadata tag, or None when absent/unparseable.

    Older muxers (and phones via FFmpeg < 5) stored orientation as a ``rotate`` tag meaning "turn the
    picture this many degrees clockwise to display it".
    """
    raw = metadata.get("rotate")
    if raw is None:
        return None
    try:
        return normalise_rotation(float(raw))
    except ValueError:
        log.warning("ignoring unparseable rotate tag %r", raw)
        return None


def rotation_from_frame(frame: av.VideoFrame) -> int:
    """Clockwise display rotation from the frame's display-matrix side data (0 when absent).

    FFmpeg copies the stream's display matrix onto every decoded frame; ``VideoFrame.rotation`` is
    its counter-clockwise angle, so we negate it to match the ``rotate`` tag convention.
    """
    try:
        ccw = float(frame.rotation)
    except (AttributeError, ValueError, TypeError):
        return 0
    return normalise_rotation(-ccw)


def rotate_image(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn an ``[H, W, C]`` image clockwise by ``rotation`` degrees (0/90/180/270), contiguous copy."""
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90), axes=(0, 1)))


def coded_size(size: tuple[int, int] | None, rotation: int) -> tuple[int, int] | None:
    """The (width, height) to scale the *coded* picture to so that it is ``size`` after rotation."""
    if size is None or rotation in (0, 180):
        return size
    return size[1], size[0]


def frame_to_rgb(
    frame: av.VideoFrame,
    size: tuple[int, int] | None,
    rotation: int,
    reformatter: VideoReformatter | None = None,
) -> np.ndarray:
    """Convert (and optionally scale) a decoded frame to an upright uint8 ``[H, W, 3]`` RGB array.

    Scaling is done by swscale inside the colour conversion, one pass in C, which is several times
    faster than converting at full size and resizing with PIL. ``size`` is (width, height) *after*
    rotation. Pass the same ``reformatter`` for every frame of a stream: ``VideoFrame.to_ndarray``
    builds a new swscale context (filter tables included) for each frame, which was measured to cost
    about a third of the decode time at 720p; a shared one is reused while the sizes stay the same.
    The pixels are identical either way.

    swscale runs single-threaded here (``threads=1``): the decoder's frame threads already keep every
    core busy, and slicing a 112x112 output over threads cost ~20% more CPU per frame at 720p (and
    stalled on hand-offs when the machine was loaded); the pixels are the same as with its automatic
    thread count (tests/ingest/test_reference_decode.py).
    """
    target = coded_size(size, rotation)
    kwargs: dict[str, Any] = {"format": "rgb24", "threads": 1}
    if target is not None and (target[0] != frame.width or target[1] != frame.height):
        kwargs.update(width=target[0], height=target[1], interpolation="BILINEAR")
    if reformatter is not None:
        image = reformatter.reformat(frame, **kwargs).to_ndarray()
    else:
        image = frame.to_ndarray(**kwargs)
    return rotate_image(image, rotation)


def check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate a (width, height) pair given by a caller."""
    if size is None:
        return None
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive (width, height), got {size!r}")
    return w, h
