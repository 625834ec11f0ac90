"""skip_unneeded=True: the same frames as a full decode, with fewer frames decoded."""

from __future__ import annotations

import numpy as np
import pytest

import ingest._reader as reader_module
from ingest._plan import avcc_length_size, nal_info
from ingest.clips import ClipSpec, IngestReport, iter_clips
from ingest.decode import iter_frames
from tests.ingest.test_resume import BFRAMES


def _frames(path, sample_fps, skip, **kwargs):
    report = IngestReport()
    frames = list(iter_frames(path, sample_fps=sample_fps, size=(32, 24), report=report, skip_unneeded=skip, **kwargs))
    return frames, report


@pytest.fixture
def count_decoded(monkeypatch):
    """Counts the frames that come out of the decoder inside the reader."""
    counter = {"frames": 0}
    real = reader_module.decode

    def counting(*args, **kwargs):
        for frame in real(*args, **kwargs):
            counter["frames"] += 1
            yield frame

    monkeypatch.setattr(reader_module, "decode", counting)
    monkeypatch.setattr(reader_module, "decoded_frames", lambda c, s, e: counting(reader_module.demux(c, s, e), s, e))
    return counter


@pytest.mark.parametrize("sample_fps", [5.0, 4.0, 1.0, 0.4, None])
def test_same_frames_as_full_decode(make_video, count_decoded, sample_fps):
    path = make_video(n_frames=150, fps=15, codec_options=BFRAMES)  # 10 s, keyframe every 10 frames
    full, full_report = _frames(path, sample_fps, skip=False)
    decoded_full = count_decoded["frames"]
    fast, fast_report = _frames(path, sample_fps, skip=True)
    decoded_fast = count_decoded["frames"] - decoded_full
    assert [(i, t) for i, t, _ in fast] == [(i, t) for i, t, _ in full]
    for (_, _, a), (_, _, b) in zip(full, fast, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fast_report == full_report
    assert decoded_full == 150
    if sample_fps is None:
        assert decoded_fast == 150
    else:
        assert decoded_fast < decoded_full  # non-reference B-frames / whole GOPs were never decoded
    if sample_fps == 0.4:  # one frame every 2.5 s, a keyframe every 0.67 s: most GOPs are skipped
        assert decoded_fast <= 40


def test_annex_b_mpegts(make_video, count_decoded):
    # MPEG-TS carries H.264 with start codes instead of length prefixes
    path = make_video("v.ts", n_frames=90, fps=15, codec_options=BFRAMES, container_format="mpegts")
    full, full_report = _frames(path, 5.0, skip=False)
    decoded_full = count_decoded["frames"]
    fast, fast_report = _frames(path, 5.0, skip=True)
    assert [(i, t) for i, t, _ in fast] == [(i, t) for i, t, _ in full]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(full, fast, strict=True))
    assert fast_report == full_report
    assert count_decoded["frames"] - decoded_full < decoded_full


def test_without_bframes_or_other_codecs_it_is_the_full_decode(make_video):
    for path in (
        make_video("ultrafast.mp4", n_frames=60, fps=15),  # no B-frames: every frame is a reference
        make_video("mpeg4.mkv", n_frames=60, fps=15, codec="mpeg4", container_format="matroska"),
    ):
        full, full_report = _frames(path, 5.0, skip=False)
        fast, fast_report = _frames(path, 5.0, skip=True)
        assert [(i, t) for i, t, _ in fast] == [(i, t) for i, t, _ in full]
        assert fast_report == full_report


def test_iter_clips_with_skip_matches(make_video):
    path = make_video(n_frames=120, fps=15, codec_options=BFRAMES)
    spec = ClipSpec(clip_seconds=1.0, stride_seconds=0.5, sample_fps=5.0, size=(32, 24))
    full = list(iter_clips(path, spec))
    fast = list(iter_clips(path, spec, skip_unneeded=True, threads=1))
    assert len(full) == len(fast) > 10
    for a, b in zip(full, fast, strict=True):
        np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_threads_option(make_video):
    path = make_video(n_frames=30, fps=15)
    one = [i for i, _, _ in iter_frames(path, sample_fps=None, size=None, threads=1)]
    two = [i for i, _, _ in iter_frames(path, sample_fps=None, size=None, threads=2)]
    assert one == two == list(range(30))
    with pytest.raises(ValueError):
        next(iter_frames(path, sample_fps=None, size=None, threads=-1))


def test_nal_parsing():
    # Annex B: SPS (ref_idc 3, type 7), then a non-reference slice (ref_idc 0, type 1)
    annexb = b"\x00\x00\x00\x01\x67\x64\x00\x1f" + b"\x00\x00\x01\x01\x9a\x00"
    info = nal_info(annexb, None)
    assert info.vcl and info.non_reference and not info.idr
    # length-prefixed (avcC, 4-byte lengths): an IDR slice (ref_idc 3, type 5)
    avcc = (3).to_bytes(4, "big") + b"\x65\x88\x80"
    info = nal_info(avcc, 4)
    assert info.vcl and info.idr and not info.non_reference
    assert not nal_info(b"", 4).vcl
    assert avcc_length_size(b"\x01\x64\x00\x1f\xff\xe1\x00") == 4
    assert avcc_length_size(b"\x00\x00\x00\x01\x67") is None


def test_shared_reformatter_gives_identical_pixels(make_video):
    import av
    from av.video.reformatter import VideoReformatter

    from ingest._media import frame_to_rgb

    path = make_video(n_frames=10, size=(64, 48), rotation=90)
    shared = VideoReformatter()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            for size in ((32, 24), (17, 33), None):
                np.testing.assert_array_equal(frame_to_rgb(frame, size, 90), frame_to_rgb(frame, size, 90, shared))
