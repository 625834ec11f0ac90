"""Random access lands where it was asked: ``read_frames`` (PyAV) returns exactly the frames ``iter_clips``
scored, in containers whose demuxer seeks by its own index and can land *after* the time asked for (MPEG-TS
seeks by byte position, AVI by decode time). Found in review: in a TS file with B-frames every clip after 2 s
came back as eight copies of the next keyframe, and a window in the last keyframe interval raised DecodeError."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ingest.clips import ClipSpec, iter_clips
from ingest.decode import read_frames

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def _encode(path: Path, codec: list[str]) -> Path:
    """12 s of a moving test pattern with a frame counter, 25 fps, B-frames, a keyframe a second."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "12",
                    *codec, "-g", "25", "-bf", "2", str(path)], check=True)
    return path


@pytest.mark.parametrize(("name", "codec"), [
    ("ward.ts", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("ward.avi", ["-c:v", "mpeg4", "-q:v", "4"]),
    ("ward.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
])
def test_frames_read_again_are_the_scored_frames(tmp_path: Path, name: str, codec: list[str]) -> None:
    video = _encode(tmp_path / name, codec)
    clips = list(iter_clips(video, ClipSpec(clip_seconds=1.0, stride_seconds=1.0, sample_fps=8.0, size=(80, 60))))
    assert len(clips) >= 10
    for clip in reversed(clips):  # backwards: every read seeks
        again = read_frames(video, clip.timestamps, size=(80, 60), backend="pyav")
        assert np.array_equal(again, clip.frames), (name, clip.index, clip.timestamps[0])
