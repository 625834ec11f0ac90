"""Clips against a reference decode: every clip frame is the plain PyAV decode of its source frame.

Why: the clip path is tuned for speed (decoder threads, one reused single-threaded swscale context,
conversion of sampled frames only, optionally packets planned out before decoding). None of that may
change a pixel or a timestamp. The reference here is the simplest decode there is: every frame, no
threads, ``frame.to_ndarray`` with a fresh swscale context at its default thread count, times from pts.
The video is noisy and textured (so scaling has detail to get wrong) and has B-frames (so presentation
order differs from decode order).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.clips import ClipSpec, IngestReport, iter_clips

FPS = 30
SIZE = (160, 120)


def _noisy_video(path: Path, n_frames: int = 75) -> Path:
    """Textured background, a moving square and per-frame noise; x264 with B-frames, a keyframe every 20."""
    rng = np.random.default_rng(5)
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    texture = 128 + 50 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 30 * np.sin((xx + 2 * yy) / 7.0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "fast", "g": "20", "bf": "3", "crf": "18"}
        for i in range(n_frames):
            img = np.repeat(texture[:, :, None], 3, axis=2) + rng.normal(0, 12, (h, w, 3))
            x = 10 + 3 * i % (w - 40)
            img[40:70, x : x + 30] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _reference(path: Path, size: tuple[int, int]) -> tuple[list[float], list[np.ndarray]]:
    """(seconds, RGB at ``size``) of every frame in presentation order, decoded the plain way."""
    times, images = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        for frame in container.decode(stream):
            times.append(float((frame.pts - origin) * Fraction(stream.time_base)))
            images.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BILINEAR"))
    return times, images


@pytest.mark.parametrize("skip_unneeded", [False, True])
@pytest.mark.parametrize("threads", [None, 1])
def test_clips_match_a_plain_reference_decode(tmp_path: Path, skip_unneeded: bool, threads: int | None) -> None:
    path = _noisy_video(tmp_path / "noisy.mp4")
    spec = ClipSpec(clip_seconds=0.5, stride_seconds=0.5, sample_fps=10.0, size=(56, 42))
    times, images = _reference(path, spec.size)
    report = IngestReport()
    clips = list(iter_clips(path, spec, report=report, threads=threads, skip_unneeded=skip_unneeded))

    assert len(clips) == 5 and report.frames == 75 and report.errors == []
    for clip in clips:
        assert clip.frames.shape == (5, 42, 56, 3)
        # 10 of 30 fps: every third source frame, clips back to back
        np.testing.assert_array_equal(clip.frame_indices, 15 * clip.index + 3 * np.arange(5))
        for k, index in enumerate(clip.frame_indices):
            assert clip.timestamps[k] == times[index]
            np.testing.assert_array_equal(clip.frames[k], images[index])
        assert clip.start == times[clip.frame_indices[0]]
