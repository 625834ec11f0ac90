"""iter_clips: counts, times, overlap, wall clock, shapes, gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ingest.clips import ClipSpec, IngestReport, iter_clips
from tests.ingest.videos import decode_index


def test_clip_spec_frames_and_validation():
    assert ClipSpec().frames_per_clip == 16
    assert ClipSpec(clip_seconds=1.5, sample_fps=5.0).frames_per_clip == 8  # round(7.5) -> 8 (banker's)
    assert ClipSpec(clip_seconds=1.0, sample_fps=4.0).frames_per_clip == 4
    with pytest.raises(ValueError):
        ClipSpec(stride_seconds=0)
    with pytest.raises(ValueError):
        ClipSpec(size=(0, 112))
    with pytest.raises(ValueError):
        ClipSpec(clip_seconds=0.05, sample_fps=4.0)


def test_clips_non_overlapping(make_video):
    path = make_video(n_frames=90, fps=15, size=(64, 48))  # 6 s
    spec = ClipSpec(clip_seconds=2.0, stride_seconds=2.0, sample_fps=5.0, size=(40, 30))
    report = IngestReport()
    clips = list(iter_clips(path, spec, report=report))
    assert [c.index for c in clips] == [0, 1, 2]
    assert [c.start for c in clips] == pytest.approx([0.0, 2.0, 4.0])
    assert [c.end for c in clips] == pytest.approx([2.0, 4.0, 6.0])
    for c in clips:
        assert c.frames.shape == (10, 30, 40, 3) and c.frames.dtype == np.uint8
        assert c.timestamps.dtype == np.float64 and c.frame_indices.dtype == np.int64
        np.testing.assert_allclose(c.timestamps, c.start + np.arange(10) * 0.2, atol=1e-6)
        np.testing.assert_array_equal(c.frame_indices, np.round(c.timestamps * 15).astype(int))
        assert c.start_wall is None and c.end_wall is None
    assert report.clips == 3 and report.frames == 90
    assert report.duration == pytest.approx(6.0) and report.errors == [] and report.gaps == []


def test_clip_frames_are_the_right_source_frames(make_video):
    path = make_video(n_frames=60, fps=15, size=(64, 48))
    # full-size frames so the index pattern can be read back
    clips = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (64, 48))))
    for c in clips:
        assert [decode_index(f) for f in c.frames] == c.frame_indices.tolist()


def test_overlapping_stride(make_video):
    path = make_video(n_frames=90, fps=15)
    spec = ClipSpec(clip_seconds=2.0, stride_seconds=0.4, sample_fps=5.0, size=(16, 16))
    clips = list(iter_clips(path, spec))
    assert [c.start for c in clips] == pytest.approx([0.4 * k for k in range(11)], abs=1e-6)
    assert [c.index for c in clips] == list(range(11))
    # consecutive clips share 8 of their 10 frames
    for a, b in zip(clips, clips[1:], strict=False):
        np.testing.assert_array_equal(a.frame_indices[2:], b.frame_indices[:8])
        np.testing.assert_array_equal(a.frames[2:], b.frames[:8])


def test_stride_between_sample_times(make_video):
    path = make_video(n_frames=90, fps=15)
    spec = ClipSpec(clip_seconds=2.0, stride_seconds=0.5, sample_fps=5.0, size=(16, 16))
    starts = [c.start for c in iter_clips(path, spec)]
    # grid 0.5 lies between samples 0.4 and 0.6: the clip starts at the later one
    assert starts == pytest.approx([0.0, 0.6, 1.0, 1.6, 2.0, 2.6, 3.0, 3.6, 4.0], abs=1e-6)


def test_stride_longer_than_clip_skips_frames(make_video):
    path = make_video(n_frames=90, fps=15)
    clips = list(iter_clips(path, ClipSpec(clip_seconds=1.0, stride_seconds=2.5, sample_fps=5.0, size=(16, 16))))
    assert [c.start for c in clips] == pytest.approx([0.0, 2.6, 5.0], abs=1e-6)
    assert all(len(c.timestamps) == 5 for c in clips)


def test_trailing_partial_clip_is_dropped(make_video):
    path = make_video(n_frames=75, fps=15)  # 5 s
    clips = list(iter_clips(path, ClipSpec(2.0, 2.0, 5.0, (16, 16))))
    assert len(clips) == 2
    assert clips[-1].end <= 5.0 + 1e-6


def test_wall_clock(make_video):
    path = make_video(n_frames=60, fps=15)
    started = datetime(2024, 5, 1, 22, 59, 59, tzinfo=UTC)
    clips = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (16, 16)), started_at=started))
    assert [c.start_wall for c in clips] == [started + timedelta(seconds=k) for k in range(4)]
    assert clips[0].end_wall == started + timedelta(seconds=1)
    naive = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (16, 16)), started_at=started.replace(tzinfo=None)))
    assert naive[1].start_wall == started + timedelta(seconds=1)  # naive is taken as UTC
    assert naive[1].start_wall.tzinfo is not None


def test_clips_do_not_span_gaps(make_video):
    path = make_video(pts=[*range(0, 30), *range(60, 105)], fps=15)  # frames 0-2 s and 4-7 s
    report = IngestReport()
    clips = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (16, 16)), report=report))
    assert [c.index for c in clips] == list(range(len(clips)))
    assert [c.start for c in clips] == pytest.approx([0.0, 1.0, 4.0, 5.0, 6.0])
    for c in clips:
        assert np.diff(c.timestamps).max() < 0.3
    assert len(report.gaps) == 1
