"""Odd and hostile input: VFR, odd sizes, grayscale/infrared, audio, unknown codecs, forged headers, growing files."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.clips import ClipSpec, IngestReport, iter_clips
from ingest.decode import iter_frames
from ingest.errors import InvalidVideoError
from ingest.probe import probe
from tests.ingest.videos import decode_index, frame_pattern


def test_variable_frame_rate_is_timed_by_pts(make_video):
    # 1/30 s ticks with steps of 1, 2 and 3 ticks: 30, 15 and 10 fps mixed, as phones record
    rng = np.random.default_rng(0)
    pts = np.concatenate([[0], np.cumsum(rng.choice([1, 2, 3], size=119))]).tolist()
    path = make_video(pts=pts, fps=30)
    info = probe(path)
    assert info.fps > 0 and info.duration == pytest.approx(pts[-1] / 30, abs=0.1)
    frames = list(iter_frames(path, sample_fps=None, size=None))
    np.testing.assert_allclose([t for _, t, _ in frames], np.array(pts) / 30, atol=1e-6)
    assert [decode_index(f) % 256 for _, _, f in frames] == [i % 256 for i in range(120)]

    sampled = np.array([t for _, t, _ in iter_frames(path, sample_fps=5.0, size=(16, 16))])
    grid = np.arange(len(sampled)) * 0.2
    assert np.abs(sampled - grid).max() <= 0.1 + 1e-6  # evenly spaced by time despite the irregular source
    clips = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (16, 16))))
    assert len(clips) == int(pts[-1] / 30)
    assert all(np.diff(c.timestamps).max() < 0.3 for c in clips)


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "fmt"),
    [("libx264", "yuv444p", "mp4"), ("ffv1", "yuv420p", "matroska")],
    ids=["h264-444", "ffv1-420"],
)
def test_odd_source_size(make_video, codec, pix_fmt, fmt):
    # libx264 refuses odd sizes in 4:2:0 (checked below); 4:4:4 H.264 and FFV1 4:2:0 store them
    path = make_video(
        "odd." + ("mp4" if fmt == "mp4" else "mkv"),
        n_frames=30,
        size=(321, 239),
        codec=codec,
        pix_fmt=pix_fmt,
        container_format=fmt,
    )
    info = probe(path)
    assert (info.width, info.height) == (321, 239)
    frames = list(iter_frames(path, sample_fps=None, size=None))
    assert frames[0][2].shape == (239, 321, 3)
    assert [decode_index(f) for _, _, f in frames] == list(range(30))
    odd_target = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (33, 17))))
    assert odd_target[0].frames.shape == (5, 17, 33, 3)


def test_libx264_cannot_write_odd_420(make_video):
    with pytest.raises(av.FFmpegError):
        make_video("odd420.mp4", n_frames=2, size=(321, 239))


def test_grayscale_infrared_h264(make_video):
    path = make_video(n_frames=15, fps=15, pix_fmt="gray")
    frames = list(iter_frames(path, sample_fps=None, size=None))
    rgb = frames[3][2]
    assert rgb.shape == (48, 64, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    expected = frame_pattern(3, 64, 48)[..., 0].astype(int)
    assert np.abs(rgb[..., 0].astype(int) - expected).mean() < 3
    assert decode_index(rgb) == 3


def test_full_range_mjpeg_night_camera(make_video):
    # IP cameras in night mode often send full-range (yuvj) MJPEG: black must stay black, white white
    path = make_video(
        "night.avi",
        n_frames=10,
        fps=10,
        codec="mjpeg",
        pix_fmt="yuvj420p",
        container_format="avi",
        codec_options={"q:v": "2"},
        creation_time=None,
    )
    _, _, rgb = next(iter_frames(path, sample_fps=None, size=None))
    expected = frame_pattern(0, 64, 48)
    assert np.abs(rgb.astype(int) - expected).mean() < 4
    assert rgb[1:6, 1:6].max() < 20  # a black bit block, not lifted to video-range grey (16)...
    assert rgb[14:20, 2:12].min() > 235  # ...and the white marker not clipped below 235


def _with_audio(path: Path, seconds: int = 3, fps: int = 15) -> Path:
    """MP4 whose *first* stream is AAC audio and second H.264 video, interleaved."""
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16000)
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast"}
        samples = 0
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, 64, 48), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
            while samples < (i + 1) * 16000 // fps:
                tone = np.sin(np.arange(samples, samples + 1024) / 10.0).astype(np.float32)[None, :]
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, samples
                container.mux(audio.encode(chunk))
                samples += 1024
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def test_audio_tracks_are_ignored(tmp_path):
    path = _with_audio(tmp_path / "with_audio.mp4")
    with av.open(str(path)) as container:
        assert container.streams[0].type == "audio"
    info = probe(path)
    assert info.codec == "h264" and info.fps == pytest.approx(15)
    report = IngestReport()
    clips = list(iter_clips(path, ClipSpec(1.0, 1.0, 5.0, (32, 24)), report=report))
    assert len(clips) == 3 and report.errors == [] and report.frames == 45


def test_unsupported_codec(make_video, tmp_path):
    # An AVI whose FourCC names no codec FFmpeg knows: the container opens, nothing can decode it
    data = make_video(
        "mjpeg.avi", n_frames=5, codec="mjpeg", pix_fmt="yuvj420p", container_format="avi", creation_time=None
    ).read_bytes()
    assert b"MJPG" in data
    alien = tmp_path / "alien.avi"
    alien.write_bytes(data.replace(b"MJPG", b"ZZZZ"))
    with pytest.raises(InvalidVideoError, match="unsupported codec"):
        probe(alien)
    with pytest.raises(InvalidVideoError):
        next(iter_clips(alien, ClipSpec()))


def test_forged_frame_count_is_refused_before_decoding(make_video, tmp_path):
    data = bytearray(make_video(n_frames=30, faststart=True).read_bytes())
    stts = data.index(b"stts")  # 'stts', version/flags, entry count, then (sample count, delta) pairs
    struct.pack_into(">I", data, stts + 12, 0x7FFFFFFF)
    forged = tmp_path / "forged.mp4"
    forged.write_bytes(bytes(data))
    with pytest.raises(InvalidVideoError, match="2147483647 frames"):
        probe(forged)
    with pytest.raises(InvalidVideoError, match="claims 30 frames, more than the limit of 10"):
        probe(make_video("fine.mp4", n_frames=30), max_frames=10)


def test_forged_duration_is_refused_before_decoding(make_video, tmp_path):
    data = bytearray(make_video("v.mkv", n_frames=30, container_format="matroska").read_bytes())
    at = data.index(b"\x44\x89")  # Matroska Segment/Info/Duration element (8-byte float, milliseconds)
    assert data[at + 2] == 0x88
    struct.pack_into(">d", data, at + 3, 1e13)
    forged = tmp_path / "forged.mkv"
    forged.write_bytes(bytes(data))
    with pytest.raises(InvalidVideoError, match="exceeds the limit"):
        probe(forged)


def _mpegts_bytes(make_video, n_frames: int) -> bytes:
    return make_video(
        "src.ts",
        n_frames=n_frames,
        fps=15,
        container_format="mpegts",
        codec_options={"preset": "ultrafast", "g": "15"},
        creation_time=None,
    ).read_bytes()


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_file_changing_while_read_gives_a_partial_ingest_with_reason(make_video, tmp_path, change):
    data = _mpegts_bytes(make_video, 150)  # 10 s
    path = tmp_path / "recording.ts"
    path.write_bytes(data[: len(data) // 2] if change == "grows" else data)
    report = IngestReport()
    spec = ClipSpec(1.0, 1.0, 5.0, (16, 16))
    clips = []
    for clip in iter_clips(path, spec, report=report):
        clips.append(clip)
        if len(clips) == 1:  # the camera is still writing (or the file is cut under us)
            if change == "grows":
                with path.open("ab") as fh:
                    fh.write(data[len(data) // 2 : len(data) * 3 // 4])
            else:
                with path.open("r+b") as fh:
                    fh.truncate(len(data) // 3)
    assert 1 <= len(clips) < 10
    assert any("changed while it was being read" in e for e in report.errors), report.errors
    assert [c.index for c in clips] == list(range(len(clips)))
