"""iter_frames / read_frame / read_frames: which frames, at what times, in which orientation."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ingest.decode import iter_frames, read_frame, read_frames
from ingest.errors import DecodeError
from ingest.probe import probe
from ingest.report import IngestReport
from tests.ingest.videos import decode_index, frame_pattern


def test_iter_frames_every_frame(make_video):
    path = make_video(n_frames=30, fps=15)
    report = IngestReport()
    frames = list(iter_frames(path, sample_fps=None, size=None, report=report))
    assert [i for i, _, _ in frames] == list(range(30))
    np.testing.assert_allclose([t for _, t, _ in frames], np.arange(30) / 15, atol=1e-6)
    assert [decode_index(f) for _, _, f in frames] == list(range(30))
    assert frames[0][2].shape == (48, 64, 3) and frames[0][2].dtype == np.uint8
    assert report.frames == 30 and report.duration == pytest.approx(2.0) and report.errors == []


def test_iter_frames_samples_by_time_and_resizes(make_video):
    path = make_video(n_frames=45, fps=15)
    frames = list(iter_frames(path, sample_fps=5.0, size=(32, 20)))
    assert [i for i, _, _ in frames] == list(range(0, 45, 3))
    np.testing.assert_allclose(np.diff([t for _, t, _ in frames]), 0.2, atol=1e-6)
    assert all(f.shape == (20, 32, 3) for _, _, f in frames)


def test_iter_frames_sampling_faster_than_source_keeps_every_frame(make_video):
    frames = list(iter_frames(make_video(n_frames=20, fps=10), sample_fps=25.0, size=None))
    assert [i for i, _, _ in frames] == list(range(20))


def test_iter_frames_non_integer_ratio_is_evenly_spread(make_video):
    path = make_video(n_frames=60, fps=15)  # 4 s sampled at 4 fps: 16 frames near k/4 s
    times = np.array([t for _, t, _ in iter_frames(path, sample_fps=4.0, size=(16, 16))])
    assert len(times) == 16
    assert np.abs(times - np.arange(16) / 4).max() <= 0.5 / 15 + 1e-6


def test_iter_frames_reports_gaps(make_video):
    path = make_video(pts=[*range(0, 15), *range(45, 60)], fps=15)  # 2 s missing after 1 s
    report = IngestReport()
    frames = list(iter_frames(path, sample_fps=None, size=None, report=report))
    assert len(frames) == 30
    assert frames[15][0] == 15 and frames[15][1] == pytest.approx(3.0)  # index = position in the file
    assert len(report.gaps) == 1
    start, end = report.gaps[0]
    assert start == pytest.approx(14 / 15) and end == pytest.approx(3.0)
    assert report.duration == pytest.approx(4.0)  # last frame at 59/15 s plus one 1/15 s interval


def test_read_frame_returns_nearest_frame(make_video):
    path = make_video(n_frames=60, fps=15)
    for t in (0.0, 0.52, 1.03, 2.97, 3.9):
        assert decode_index(read_frame(path, t)) == min(round(t * 15), 59)
    assert decode_index(read_frame(path, 100.0)) == 59  # past the end: the last frame
    assert read_frame(path, 1.0, size=(20, 10)).shape == (10, 20, 3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_read_frames_order_and_duplicates(make_video, backend):
    path = make_video(n_frames=75, fps=15)
    times = [4.0, 0.0, 2.0, 2.0, 0.6, 3.4, 1.0, 4.92, 0.12, 3.0]
    frames = read_frames(path, times, backend=backend)
    assert frames.shape == (len(times), 48, 64, 3)
    assert [decode_index(f) for f in frames] == [min(round(t * 15), 74) for t in times]


def test_decord_and_pyav_agree(make_video):
    path = make_video(n_frames=90, fps=15)
    times = np.random.default_rng(0).uniform(0, 6, 25)
    full_d = read_frames(path, times, backend="decord")
    full_p = read_frames(path, times, backend="pyav")
    assert full_d.shape == full_p.shape == (25, 48, 64, 3)
    assert np.abs(full_d.astype(int) - full_p).mean() < 1.0
    small_d = read_frames(path, times, size=(32, 24), backend="decord")
    small_p = read_frames(path, times, size=(32, 24), backend="pyav")
    assert small_d.shape == small_p.shape == (25, 24, 32, 3)
    assert np.abs(small_d.astype(int) - small_p).mean() < 4.0


def test_read_frames_empty_and_bad_backend(make_video):
    path = make_video()
    assert read_frames(path, [], size=(8, 6)).shape == (0, 6, 8, 3)
    assert read_frames(path, []).shape == (0, 48, 64, 3)
    with pytest.raises(ValueError):
        read_frames(path, [0.0], backend="opencv")


# FFmpeg's display matrix angle is counter-clockwise; our VideoInfo.rotation is clockwise.
@pytest.mark.parametrize(("ccw", "clockwise"), [(90, 270), (-90, 90), (180, 180)])
def test_rotation_from_display_matrix(make_video, ccw, clockwise):
    path = make_video(n_frames=15, rotation=ccw)
    info = probe(path)
    assert info.rotation == clockwise
    expected = np.rot90(frame_pattern(0, 64, 48), k=-clockwise // 90).astype(int)
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])

    _, _, first = next(iter_frames(path, sample_fps=None, size=None))
    assert first.shape == expected.shape
    assert np.abs(first.astype(int) - expected).mean() < 6

    # auto backend must not use decord on rotated files; the result has the upright shape
    frames = read_frames(path, np.linspace(0, 0.9, 10), size=(expected.shape[1] // 2, expected.shape[0] // 2))
    assert frames.shape == (10, expected.shape[0] // 2, expected.shape[1] // 2, 3)
    with pytest.raises(DecodeError):
        read_frames(path, [0.0], backend="decord")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
def test_rotation_matches_ffmpeg_cli(make_video):
    path = make_video(n_frames=5, rotation=90)
    _, _, ours = next(iter_frames(path, sample_fps=None, size=None))
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(ours.shape)  # fails if ffmpeg's upright size differs
    assert np.abs(ours.astype(int) - theirs).mean() < 3


def test_auto_backend_falls_back_to_pyav_when_decord_fails(make_video, monkeypatch):
    import ingest.decode as decode

    def broken(*args, **kwargs):
        raise RuntimeError("decord exploded")

    monkeypatch.setattr(decode, "_read_decord", broken)
    path = make_video(n_frames=30)
    times = np.arange(0, 1.9, 0.1) + 0.01  # enough distinct times for "auto" to pick decord; no ties
    frames = read_frames(path, times)
    assert [decode_index(f) for f in frames] == [min(round(t * 15), 29) for t in times]
    with pytest.raises(DecodeError, match="decord exploded"):
        read_frames(path, times, backend="decord")
