"""probe(): the facts of good files, and a clear refusal for each kind of bad file."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from ingest._media import rotation_from_metadata
from ingest.clips import ClipSpec, IngestReport, iter_clips
from ingest.errors import IngestError, InvalidVideoError
from ingest.probe import _creation_time, probe


def test_probe_reports_stream_facts(make_video):
    path = make_video(n_frames=30, fps=15, size=(64, 48))
    info = probe(path)
    assert info.path == str(path)
    assert "mp4" in info.container
    assert info.codec == "h264"
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(15.0)
    assert info.duration == pytest.approx(2.0, abs=0.07)
    assert info.frame_count == 30
    assert info.rotation == 0
    assert info.creation_time == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert info.creation_time.tzinfo is not None


def test_probe_without_creation_time(make_video):
    assert probe(make_video(creation_time=None)).creation_time is None


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    files = {}
    files["empty"] = tmp_path / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.mp4"
    files["text"].write_text("patient 12 comfortable overnight, no events\n" * 40, encoding="utf-8")
    png = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png)
    files["png"] = tmp_path / "image.mp4"
    shutil.copy(png, files["png"])
    data = good.read_bytes()
    files["header_overwritten"] = tmp_path / "header.mp4"
    files["header_overwritten"].write_bytes(b"\xde\xad\xbe\xef" * 16 + data[64:])
    files["half_without_faststart"] = tmp_path / "half.mp4"  # moov atom is at the end: cut off
    files["half_without_faststart"].write_bytes(data[: len(data) // 2])
    return files


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "file is empty"),
        ("text", "looks like text"),
        ("png", "PNG image"),
        ("header_overwritten", "not a video file"),
        ("half_without_faststart", "truncated or corrupt"),
    ],
)
def test_probe_refuses_bad_files(tmp_path, make_video, kind, message):
    files = _bad_files(tmp_path, make_video("good.mp4", n_frames=60))
    with pytest.raises(InvalidVideoError) as excinfo:
        probe(files[kind])
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, IngestError)


def test_iter_clips_refuses_what_probe_refuses(tmp_path, make_video):
    files = _bad_files(tmp_path, make_video("good.mp4"))
    with pytest.raises(InvalidVideoError):
        next(iter_clips(files["png"], ClipSpec()))


def test_probe_refuses_missing_file(tmp_path):
    with pytest.raises(InvalidVideoError, match="file not found"):
        probe(tmp_path / "nope.mp4")


def test_probe_refuses_audio_only(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InvalidVideoError, match="no video stream"):
        probe(path)


def test_probe_refuses_absurd_dimensions_before_decoding(tmp_path):
    # A YUV4MPEG header claiming 16000x16000 followed by a few bytes: decoding would fail with another
    # message, so the "exceed the limit" message proves the size was refused before any decoding.
    path = tmp_path / "huge.y4m"
    path.write_bytes(b"YUV4MPEG2 W16000 H16000 F15:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 1000)
    with pytest.raises(InvalidVideoError, match="16000x16000 exceed the limit"):
        probe(path)


def test_probe_limits_are_configurable(make_video):
    path = make_video(n_frames=30)
    with pytest.raises(InvalidVideoError, match="64x48 exceed the limit"):
        probe(path, max_pixels=1000)
    with pytest.raises(InvalidVideoError, match="duration"):
        probe(path, max_duration=1.0)


def test_half_file_with_moov_first_decodes_partly(tmp_path, make_video):
    full = make_video("full.mp4", n_frames=90, faststart=True)
    half = tmp_path / "half.mp4"
    data = full.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=1.0, sample_fps=5.0, size=(32, 24))

    full_report, half_report = IngestReport(), IngestReport()
    full_clips = list(iter_clips(full, spec, report=full_report))
    info = probe(half)  # the header is intact, so probe accepts it
    half_clips = list(iter_clips(half, spec, report=half_report))

    assert info.duration == pytest.approx(6.0, abs=0.1)
    assert len(full_clips) == 6 and full_report.errors == []
    assert 0 < len(half_clips) < len(full_clips)
    assert half_report.frames < full_report.frames
    assert any("truncated" in e for e in half_report.errors)


def test_corrupt_middle_is_skipped_and_reported(tmp_path, make_video):
    good = make_video("good.mp4", n_frames=90, faststart=True)
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    a, b = int(len(data) * 0.45), int(len(data) * 0.6)
    data[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    report = IngestReport()
    clips = list(iter_clips(bad, ClipSpec(1.0, 1.0, 5.0, (32, 24)), report=report))
    assert len(clips) >= 3
    assert report.errors, "damage in the middle of the file must be reported"
    assert all(c.frames.shape == (5, 24, 32, 3) for c in clips)


def test_creation_time_parsing():
    assert _creation_time({"creation_time": "2023-05-06T07:08:09.500000Z"}) == datetime(
        2023, 5, 6, 7, 8, 9, 500000, tzinfo=UTC
    )
    assert _creation_time({"creation_time": "2023-05-06 07:08:09"}) == datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert _creation_time({"creation_time": "1904-01-01T00:00:00.000000Z"}) is None  # unset camera clock
    assert _creation_time({"creation_time": "garbage"}) is None
    assert _creation_time({}) is None


def test_rotate_tag_parsing():
    # FFmpeg 8's MP4 muxer no longer writes a legacy "rotate" tag, so the tag path is tested directly.
    assert rotation_from_metadata({"rotate": "90"}) == 90
    assert rotation_from_metadata({"rotate": "-90"}) == 270
    assert rotation_from_metadata({"rotate": "180"}) == 180
    assert rotation_from_metadata({"rotate": "x"}) is None
    assert rotation_from_metadata({}) is None


def test_probe_refuses_file_cut_before_its_first_frame(tmp_path, make_video):
    data = make_video("full.mp4", n_frames=30, faststart=True).read_bytes()
    mdat = data.index(b"mdat")  # with faststart the header (moov) comes first, then the frames
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: mdat + 20])  # intact header, almost no frame data
    with pytest.raises(InvalidVideoError, match="could not decode any frame"):
        probe(cut)
