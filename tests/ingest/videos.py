"""Tiny test videos whose frames encode their own index (used by conftest.make_video and the tests).

Every test video is written here with PyAV in a few milliseconds, so no test depends on files outside
its ``tmp_path``. Frame ``i`` shows ``i`` in binary as 8 black/white blocks along the top, which lets a
test check *which* source frame a function returned, not only its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

BLOCK = 8  # pixels per bit block


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """uint8 RGB frame: bits of ``index`` as 8 blocks on top, a white marker at the top-left below."""
    img = np.full((height, width, 3), 96, dtype=np.uint8)
    for bit in range(8):
        if index >> bit & 1:
            img[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255
        else:
            img[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 0
    img[BLOCK + 4 : height // 2, : width // 4] = 255  # orientation marker, top-left quadrant
    return img


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`frame_pattern` on a decoded (un-rotated, full-size) frame."""
    value = 0
    for bit in range(8):
        block = frame[1 : BLOCK - 1, bit * BLOCK + 1 : (bit + 1) * BLOCK - 1]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    *,
    n_frames: int = 30,
    fps: int = 15,
    size: tuple[int, int] = (64, 48),
    rotation: float | None = None,
    faststart: bool = False,
    pts: Sequence[int] | None = None,
    creation_time: str | None = "2024-03-01T12:00:00.000000Z",
    codec_options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    container_format: str = "mp4",
) -> Path:
    """Write a video of index-pattern frames (``pts`` overrides frame timestamps, in 1/fps).

    Defaults: H.264 MP4, yuv420p, CRF 10, preset ultrafast (no B-frames). ``codec_options`` replaces the
    encoder options, e.g. ``{"preset": "fast", "g": "10"}`` for B-frames and a keyframe every 10 frames.
    """
    options = {"movflags": "+faststart"} if faststart else {}
    width, height = size
    with av.open(str(path), "w", format=container_format, options=options) as container:
        if creation_time:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = codec_options if codec_options is not None else {"crf": "10", "preset": "ultrafast"}
        elif codec_options:
            stream.options = codec_options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        stamps = list(pts) if pts is not None else list(range(n_frames))
        for i, p in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            frame.pts = p
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
