"""iter_clips(start_index=k): a resumed run gives exactly the clips k.. of a full run, without decoding 0..k-1."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

import ingest._resume as resume
from ingest._decoding import prepend
from ingest.clips import Clip, ClipSpec, IngestReport, iter_clips

# B-frames (x264 "fast": B-pyramid, so frames leave the decoder out of file order) and a keyframe every
# 10 frames, so the resume really seeks to a keyframe in the middle of the file.
BFRAMES = {"crf": "18", "preset": "fast", "g": "10", "keyint_min": "10", "sc_threshold": "0"}
STARTED = datetime(2024, 5, 1, 22, 0, tzinfo=UTC)


def _assert_same(full: list[Clip], part: list[Clip]) -> None:
    assert [c.index for c in part] == [c.index for c in full]
    for a, b in zip(full, part, strict=True):
        assert (a.start, a.end, a.start_wall, a.end_wall) == (b.start, b.end, b.start_wall, b.end_wall)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
        np.testing.assert_array_equal(a.frames, b.frames)  # pixel-equal, not just close


def _run(path, spec, start_index=0):
    report = IngestReport()
    clips = list(iter_clips(path, spec, started_at=STARTED, report=report, start_index=start_index))
    return clips, report


@pytest.mark.parametrize(
    "spec",
    [
        ClipSpec(clip_seconds=1.0, stride_seconds=0.4, sample_fps=5.0, size=(64, 48)),  # overlapping clips
        ClipSpec(clip_seconds=0.6, stride_seconds=1.1, sample_fps=5.0, size=(32, 24)),  # gaps between clips
    ],
    ids=["overlap", "sparse"],
)
def test_split_run_equals_full_run(make_video, spec):
    path = make_video(n_frames=120, fps=15, codec_options=BFRAMES)  # 8 s
    full, full_report = _run(path, spec)
    assert len(full) >= 6
    for k in (1, 3, len(full) // 2 + 1, len(full) - 1):
        part, report = _run(path, spec, start_index=k)
        _assert_same(full[k:], part)
        # the report describes the whole recording, as the full run's does
        assert report == full_report


def test_interrupted_then_resumed_has_no_missing_or_duplicate_clip(make_video):
    path = make_video(n_frames=120, fps=15, codec_options=BFRAMES)
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=0.5, sample_fps=5.0, size=(32, 24))
    full, _ = _run(path, spec)
    committed = []
    for clip in iter_clips(path, spec, started_at=STARTED):
        committed.append(clip)
        if len(committed) == 7:
            break  # the worker is killed here
    resumed, _ = _run(path, spec, start_index=len(committed))
    _assert_same(full, committed + resumed)


def test_resume_seeks_instead_of_decoding_from_the_start(make_video, monkeypatch):
    path = make_video(n_frames=150, fps=15, codec_options=BFRAMES)
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=1.0, sample_fps=5.0, size=(32, 24))
    first_decoded = []
    real = resume._seek_before

    def spy(reader, pts, keyframes):
        frames = real(reader, pts, keyframes)
        first = next(frames)
        first_decoded.append(first.pts)
        return prepend(first, frames)

    monkeypatch.setattr(resume, "_seek_before", spy)
    part, _ = _run(path, spec, start_index=7)
    assert [c.index for c in part] == [7, 8, 9]
    time_base = 1 / 15360  # libx264 in MP4 at 15 fps
    assert first_decoded and first_decoded[0] * time_base > 5.0  # decoding began at a keyframe near 6 s


def test_resume_across_a_gap(make_video):
    path = make_video(pts=[*range(0, 40), *range(70, 130)], fps=15, codec_options=BFRAMES)
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=0.75, sample_fps=5.0, size=(32, 24))
    full, full_report = _run(path, spec)
    assert len(full_report.gaps) == 1
    for k in range(1, len(full)):
        part, report = _run(path, spec, start_index=k)
        _assert_same(full[k:], part)
        assert report.gaps == full_report.gaps


def test_resume_past_the_end_yields_nothing(make_video):
    path = make_video(n_frames=45, fps=15)
    spec = ClipSpec(1.0, 1.0, 5.0, (16, 16))
    full, full_report = _run(path, spec)
    part, report = _run(path, spec, start_index=len(full) + 2)
    assert part == [] and report.clips == len(full) and report.frames == full_report.frames
    with pytest.raises(ValueError):
        next(iter_clips(path, spec, start_index=-1))


def test_resume_mpegts_file(make_video):
    # MPEG-TS seeks by byte position, not by timestamp: the seek is verified and repeated when it lands late
    path = make_video("v.ts", n_frames=120, fps=15, codec_options=BFRAMES, container_format="mpegts")
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=1.0, sample_fps=5.0, size=(32, 24))
    full, _ = _run(path, spec)
    assert len(full) == 8
    for k in (2, 5, 7):
        _assert_same(full[k:], _run(path, spec, start_index=k)[0])


def test_resume_without_timestamps_decodes_from_the_start(make_video):
    # A raw H.264 elementary stream has no packet timestamps: resume falls back to decoding everything
    path = make_video("v.h264", n_frames=100, fps=15, container_format="h264", creation_time=None)  # read as 25 fps
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=1.0, sample_fps=5.0, size=(32, 24))
    full, full_report = _run(path, spec)
    assert len(full) >= 3
    part, report = _run(path, spec, start_index=2)
    _assert_same(full[2:], part)
    assert report == full_report
