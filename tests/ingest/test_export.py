"""export_clip: browser-playable H.264 MP4 of [start - pre, end + post], upright, faststart."""

from __future__ import annotations

import av
import numpy as np
import pytest

from ingest.decode import iter_frames
from ingest.export import export_clip, output_size
from ingest.probe import probe
from tests.ingest.videos import decode_index, frame_pattern


def _top_level_boxes(data: bytes) -> list[str]:
    """Names of the top-level MP4 boxes in file order."""
    names, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        names.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return names


def test_window_duration_codec_and_faststart(make_video, tmp_path):
    src = make_video(n_frames=150, fps=15, size=(64, 48))  # 10 s
    out = export_clip(src, tmp_path / "events" / "e1.mp4", 4.0, 5.0, pre=2.0, post=1.0)
    assert out == tmp_path / "events" / "e1.mp4"
    info = probe(out)
    assert info.codec == "h264" and (info.width, info.height) == (64, 48) and info.rotation == 0
    assert info.duration == pytest.approx(4.0, abs=1 / 15 + 1e-6)  # [2, 6] s, within one frame
    boxes = _top_level_boxes(out.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat")
    with av.open(str(out)) as container:
        ctx = container.streams.video[0].codec_context
        assert ctx.pix_fmt == "yuv420p" and ctx.profile == "High"
    frames = list(iter_frames(out, sample_fps=None, size=None))
    assert abs(len(frames) - 60) <= 1
    assert frames[0][1] == 0.0
    # the first frame is source frame 30 (2.0 s), the last one source frame 89 (5.93 s)
    assert decode_index(frames[0][2]) == 30 and decode_index(frames[-1][2]) == 89
    assert not list(tmp_path.glob("events/.*.part"))  # the temporary file is gone


def test_window_is_clamped_to_the_file(make_video, tmp_path):
    src = make_video(n_frames=45, fps=15)  # 3 s
    out = export_clip(src, tmp_path / "a.mp4", 0.5, 2.8)  # [-1.5, 4.8] -> [0, 3]
    assert probe(out).duration == pytest.approx(3.0, abs=1 / 15 + 1e-6)
    frames = list(iter_frames(out, sample_fps=None, size=None))
    assert decode_index(frames[0][2]) == 0 and decode_index(frames[-1][2]) == 44
    with pytest.raises(ValueError, match="outside the recording"):
        export_clip(src, tmp_path / "b.mp4", 10.0, 11.0, pre=1.0, post=1.0)
    with pytest.raises(ValueError):
        export_clip(src, tmp_path / "c.mp4", 2.0, 1.0)


def test_rotation_is_applied_and_size_limited(make_video, tmp_path):
    src = make_video(n_frames=30, fps=15, size=(64, 48), rotation=-90)  # displayed 48x64, turned clockwise
    out = export_clip(src, tmp_path / "r.mp4", 0.0, 1.0, pre=0, post=0)
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (48, 64, 0)
    _, _, first = next(iter_frames(out, sample_fps=None, size=None))
    expected = np.rot90(frame_pattern(0, 64, 48), k=-1)
    assert np.abs(first.astype(int) - expected).mean() < 8  # upright pixels, no rotation metadata left
    small = export_clip(src, tmp_path / "s.mp4", 0.0, 1.0, max_side=33)
    assert (probe(small).width, probe(small).height) == (24, 32)  # even sizes for yuv420p


def test_variable_frame_rate_keeps_its_timing(make_video, tmp_path):
    pts = [0, 1, 2, 4, 5, 8, 9, 10, 13, 14, 15, 16, 20, 21, 24, 25]  # irregular, in 1/15 s
    src = make_video(pts=pts, fps=15)
    out = export_clip(src, tmp_path / "v.mp4", 0.0, 2.0, pre=0, post=0)
    times = [t for _, t, _ in iter_frames(out, sample_fps=None, size=None)]
    np.testing.assert_allclose(times, np.array(pts) / 15, atol=1e-3)


def test_output_size():
    assert output_size(1920, 1080, None) == (1920, 1080)
    assert output_size(1920, 1080, 640) == (640, 360)
    assert output_size(321, 239, None) == (320, 238)
    assert output_size(1080, 1920, 500) == (280, 500)


@pytest.mark.parametrize(("name", "fmt"), [("v.ts", "mpegts"), ("v.h264", "h264")])
def test_window_from_streams_that_seek_badly_or_not_at_all(make_video, tmp_path, name, fmt):
    # MPEG-TS seeks by byte position, a raw H.264 stream cannot seek and has no timestamps
    src = make_video(
        name,
        n_frames=150,
        fps=15,
        container_format=fmt,
        creation_time=None,
        codec_options={"preset": "fast", "g": "30"},
    )
    fps = probe(src).fps  # a raw stream is read at 25 fps
    out = export_clip(src, tmp_path / "out.mp4", 3.0, 4.0, pre=1.0, post=0.0)
    frames = list(iter_frames(out, sample_fps=None, size=None))
    assert decode_index(frames[0][2]) == round(2.0 * fps)
    assert abs(len(frames) - round(2.0 * fps)) <= 1



def test_review_clip_starts_on_the_first_frame_of_the_window(make_video, tmp_path):
    """A window starting between two frames: the clip's 0 s is the next source frame, and ``start`` says which,
    so player time t is recording time start + t."""
    from ingest.export import export_review_clip

    src = make_video(n_frames=150, fps=15, size=(64, 48))
    clip = export_review_clip(src, tmp_path / "w.mp4", 3.0, 4.0, pre=0.99, post=0.0)  # window from 2.01 s
    assert clip.start == pytest.approx(31 / 15) and clip.path == tmp_path / "w.mp4"
    frames = list(iter_frames(clip.path, sample_fps=None, size=None))
    assert frames[0][1] == 0.0 and decode_index(frames[0][2]) == 31
    for _, t, image in frames:  # every frame sits at its source time minus start
        assert decode_index(image) == round((clip.start + t) * 15)
