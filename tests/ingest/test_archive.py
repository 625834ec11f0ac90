"""The stream archive against real ffmpeg servers on loopback: every frame kept at the reader's own recording
time, review clips cut across segments with an exact start, outages in the index, MJPEG encoded, a killed
writer's segment recovered, damaged segments refused by name, and retention."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.archive import ArchiveSpec, Segment, SegmentClock, append_entries, read_index
from ingest.archive_reader import iter_archive_frames, read_archive_frames
from ingest.archive_retention import RetentionPolicy, apply_retention, plan_removal
from ingest.archive_writer import ArchiveBusy, StreamArchiveWriter
from ingest.clips import Clip, ClipSpec, IngestReport
from ingest.errors import ArchiveError
from ingest.export import export_archive_clip
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips
from tests.ingest.archive_support import STARTED, fake_archive
from tests.ingest.test_stream import _free_port
from tests.ingest.videos import decode_index

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")

FPS = 15
SPEC = ClipSpec(clip_seconds=0.5, stride_seconds=0.5, sample_fps=4.0, size=(32, 24))
RETRY = ReconnectPolicy(initial_delay=0.1, max_delay=0.3, max_attempts=40)


class _Camera:
    """``ffmpeg -re`` serving a file over TCP to the first client (MPEG-TS, or Matroska for MJPEG)."""

    def __init__(self, video: Path, fmt: str = "mpegts") -> None:
        self.video, self.fmt, self.port = video, fmt, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(self.video), "-c", "copy",
                                      "-f", self.fmt, f"{self.url}?listen=1"])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def camera(make_video):  # type: ignore[no-untyped-def]
    """12 s of index-coded frames, a keyframe every second, B-frames (as cameras send)."""
    video = make_video("cam.mp4", n_frames=12 * FPS, fps=FPS, size=(64, 48),
                       codec_options={"preset": "fast", "g": str(FPS), "keyint_min": str(FPS), "crf": "18"})
    cam = _Camera(video)
    yield cam
    cam.kill()


def _spec(url: str) -> StreamSpec:
    return StreamSpec(url, open_timeout=3.0, read_timeout=2.0, options={"analyzeduration": "300000",
                                                                        "probesize": "32768"})


def _read(cam: _Camera, folder: Path, *, clips: int, writer: StreamArchiveWriter | None = None,
          report: IngestReport | None = None, on_clip=None) -> list[Clip]:  # type: ignore[no-untyped-def]
    """Archive ``cam`` while reading ``clips`` clips, then close the archive."""
    writer = writer or StreamArchiveWriter(folder, ArchiveSpec(segment_seconds=1.0))
    stop, got = threading.Event(), []
    try:
        for clip in iter_stream_clips(_spec(cam.url), SPEC, started_at=STARTED, stop=stop, reconnect=RETRY,
                                      report=report, archive=writer):
            got.append(clip)
            if on_clip is not None:
                on_clip(clip)
            if len(got) == clips:
                stop.set()
    finally:
        writer.close()
    return got


def _all_frames(folder: Path) -> list[tuple[float, int]]:
    """(recording seconds, source frame index) of every archived frame."""
    return [(item.t, decode_index(item.frame.to_ndarray(format="rgb24")))
            for item in iter_archive_frames(folder, 0.0, 1e9)]


def test_every_frame_is_archived_at_the_readers_own_time(camera: _Camera, tmp_path: Path) -> None:
    camera.start()
    folder = tmp_path / "archive"
    seen: list[Segment] = []
    writer = StreamArchiveWriter(folder, ArchiveSpec(segment_seconds=1.0), on_segment=seen.append)
    clips = _read(camera, folder, clips=12, writer=writer)
    index = read_index(folder)
    segments = index.segments
    assert len(segments) >= 5 and [s.seq for s in segments] == list(range(1, len(segments) + 1))
    assert [s.file for s in seen] == [s.file for s in segments]  # the listener heard of each, once indexed
    assert all(s.closed and s.mode == "remux" and s.codec == "h264" and s.bytes > 0 for s in segments)
    assert all(abs(b.start - a.end) < 1e-9 for a, b in zip(segments, segments[1:], strict=False))  # no hole
    assert all(s.start_wall == (STARTED + timedelta(seconds=s.start)).isoformat() for s in segments)
    frames = _all_frames(folder)
    indices = [i for _, i in frames]
    assert len(set(indices)) == len(indices) and indices[0] == 0  # none doubled at a roll
    # none lost either, up to the last frame the reader saw (after it, the stop may cut a B-frame group short)
    seen_by_reader = int(clips[-1].frame_indices[-1])
    assert [i for i in indices if i <= seen_by_reader] == list(range(seen_by_reader + 1))
    offset = segments[0].clock.offset
    assert all(t == pytest.approx(offset + (i - indices[0]) / FPS, abs=1e-9) for t, i in frames)
    assert sum(s.frames for s in segments) == len(frames)
    for clip in clips:  # what was scored is what the archive gives back, bit for bit (remuxed, not re-encoded)
        again = read_archive_frames(folder, list(clip.timestamps), size=SPEC.size)
        assert np.array_equal(again, clip.frames), clip.index


def test_review_clip_across_two_segments_starts_exactly(camera: _Camera, tmp_path: Path) -> None:
    camera.start()
    folder = tmp_path / "archive"
    _read(camera, folder, clips=10)
    segments = read_index(folder).segments
    boundary = segments[2].start  # the window spans segments[1] and segments[2]
    start, end = boundary - 0.3, boundary + 0.4
    exported = export_archive_clip(folder, tmp_path / "clip.mp4", start, end, pre=0.25, post=0.25)
    times = {i: t for t, i in _all_frames(folder)}
    assert exported.start == min(t for t in times.values() if t >= start - 0.25 - 1e-9)  # the first frame in it
    with av.open(str(exported.path)) as container:
        decoded = [(float(f.time), decode_index(f.to_ndarray(format="rgb24")))
                   for f in container.decode(video=0)]
    assert decoded[0][0] == 0.0 and len(decoded) == exported.frames
    for player_time, index in decoded:  # player time t shows recording time clip_start + t
        assert exported.start + player_time == pytest.approx(times[index], abs=1e-4)
    shown = [i for _, i in decoded]
    assert shown == list(range(shown[0], shown[0] + len(shown)))
    assert times[shown[-1]] < end + 0.25 <= times[shown[-1]] + 1 / FPS + 1e-6  # through the window's end


def test_an_outage_is_a_gap_in_the_index(camera: _Camera, tmp_path: Path) -> None:
    camera.start()
    folder = tmp_path / "archive"
    report = IngestReport()
    dropped = threading.Event()

    def drop_once(clip: Clip) -> None:
        if clip.index == 4 and not dropped.is_set():
            dropped.set()
            camera.kill()
            threading.Timer(1.0, camera.start).start()

    _read(camera, folder, clips=12, report=report, on_clip=drop_once)
    index = read_index(folder)
    assert len(report.gaps) == 1 and len(index.gaps) == 1
    gap_start, gap_end = index.gaps[0]
    assert gap_end == pytest.approx(report.gaps[0][1], abs=1e-6) and gap_end - gap_start > 0.9
    before = [s for s in index.segments if s.end is not None and s.end <= gap_start + 1e-6]
    after = [s for s in index.segments if s.start >= gap_end - 1e-6]
    assert before and after and len(before) + len(after) == len(index.segments)  # none spans the outage
    assert all(b.start >= a.end - 1e-9 for a, b in zip(index.segments, index.segments[1:], strict=False))
    assert gap_start == pytest.approx(before[-1].end, abs=1e-6)
    assert after[0].clock.offset > before[-1].clock.offset  # the new connection placed on the wall clock
    frames = _all_frames(folder)
    assert not [t for t, _ in frames if gap_start + 1e-6 < t < gap_end - 1e-6]  # nothing inside the outage
    assert [t for t, _ in frames] == sorted(t for t, _ in frames)


def test_a_camera_sending_mjpeg_is_encoded(make_video, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    video = make_video("cam.mkv", n_frames=6 * FPS, fps=FPS, size=(64, 48), codec="mjpeg", pix_fmt="yuvj420p",
                       container_format="matroska", codec_options={"qscale": "2"})
    cam = _Camera(video, fmt="matroska")
    cam.start()
    folder = tmp_path / "archive"
    try:
        clips = _read(cam, folder, clips=6)
    finally:
        cam.kill()
    segments = read_index(folder).segments
    assert segments and all(s.mode == "encode" and s.codec == "h264" for s in segments)
    frames = _all_frames(folder)
    indices = [i for _, i in frames]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    for clip in clips:  # x264's loss only: within a few grey levels of what was scored
        again = read_archive_frames(folder, list(clip.timestamps), size=SPEC.size)
        assert np.abs(again.astype(int) - clip.frames.astype(int)).mean() < 6, clip.index


WRITER = """
import sys, threading
from datetime import UTC, datetime
from ingest.archive import ArchiveSpec
from ingest.archive_writer import StreamArchiveWriter
from ingest.clips import ClipSpec
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips
writer = StreamArchiveWriter(sys.argv[2], ArchiveSpec(segment_seconds=float(sys.argv[3])))
spec = StreamSpec(sys.argv[1], options={"analyzeduration": "300000", "probesize": "32768"})
for clip in iter_stream_clips(spec, ClipSpec(0.5, 0.5, 4.0, (32, 24)), started_at=datetime(2026, 3, 1, 8, tzinfo=UTC),
                              archive=writer, reconnect=ReconnectPolicy(0.1, 0.3, 40)):
    print(clip.index, flush=True)
"""


def test_a_killed_writers_segment_is_recovered_and_the_archive_goes_on(camera: _Camera, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    camera.start()
    child = subprocess.Popen([sys.executable, "-c", WRITER, camera.url, str(folder), "3"], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[2])
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) >= 10:  # 5 s in: one segment closed, the second being written
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    camera.kill()
    left = read_index(folder)
    assert left.segments[-1].end is None  # the dead writer's segment is still open in the index
    (folder / "seg-00000099.ts").write_bytes(b"never indexed")  # as a writer killed before its first frame leaves

    camera.start()
    resumed = StreamArchiveWriter(folder, ArchiveSpec(segment_seconds=3.0))  # recovers before writing
    index = read_index(folder)
    recovered = index.segments[-1]
    assert recovered.seq == left.segments[-1].seq and recovered.recovered and recovered.frames > 0
    assert recovered.end is not None and recovered.end > recovered.start and recovered.end_wall is not None
    assert not (folder / "seg-00000099.ts").exists()
    before = _all_frames(folder)  # the recovered segment reads cleanly, every frame up to the kill
    indices = [i for _, i in before]
    # (at its very end a B-frame whose packet was in flight can be missing while the P-frame after it is there)
    assert len(set(indices)) == len(indices) and set(range(max(indices) - 3)) <= set(indices)
    assert max(indices) >= 10 / SPEC.sample_fps * FPS
    assert before[-1][0] < recovered.end

    _read(camera, folder, clips=4, writer=resumed)
    after = read_index(folder)
    new = [s for s in after.segments if s.seq > recovered.seq]
    assert new and new[0].seq == recovered.seq + 1 and new[0].start >= recovered.end  # continues after it
    assert len(_all_frames(folder)) > len(before)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    first = StreamArchiveWriter(tmp_path / "archive")
    with pytest.raises(ArchiveBusy, match="another reader"):
        StreamArchiveWriter(tmp_path / "archive", lock_timeout=0.3)
    first.close()
    StreamArchiveWriter(tmp_path / "archive").close()


def test_damaged_segments_are_named_and_spare_the_rest(camera: _Camera, tmp_path: Path) -> None:
    camera.start()
    folder = tmp_path / "archive"
    _read(camera, folder, clips=14)
    segments = read_index(folder).segments
    assert len(segments) >= 5
    good, truncated, corrupt, missing = segments[0], segments[1], segments[2], segments[3]
    path = folder / truncated.file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    data = bytearray((folder / corrupt.file).read_bytes())
    data[len(data) // 3: len(data) // 3 + 4000] = bytes(range(256)) * 15 + bytes(160)
    (folder / corrupt.file).write_bytes(bytes(data))
    (folder / missing.file).unlink()

    def middle(s: Segment) -> tuple[float, float]:
        assert s.end is not None
        return s.start + 0.1, s.end - 0.1

    for segment, what in ((truncated, "is corrupt or truncated"), (corrupt, "is corrupt"),
                          (missing, "is missing from the archive")):
        with pytest.raises(ArchiveError, match=f"segment {segment.file} .*{what}"):
            export_archive_clip(folder, tmp_path / f"{segment.seq}.mp4", *middle(segment), pre=0, post=0)
        assert not (tmp_path / f"{segment.seq}.mp4").exists()  # nothing half-written
    clip = export_archive_clip(folder, tmp_path / "good.mp4", *middle(good), pre=0, post=0)
    assert clip.frames > 0  # the rest of the archive is untouched
    assert len(read_index(folder).segments) == len(segments)
    later = segments[4]
    assert len(list(iter_archive_frames(folder, *middle(later)))) > 0


def test_an_index_line_cut_short_is_skipped(tmp_path: Path) -> None:
    clock = SegmentClock(offset=1.5, origin=9000, time_base=Fraction(1, 90000), base=9000)
    segment = Segment(seq=1, file="seg-00000001.ts", clock=clock, start=1.5, fps=15.0, width=64, height=48,
                      rotation=0, codec="h264", mode="remux")
    append_entries(tmp_path, [segment.open_entry()])
    with (tmp_path / "index.jsonl").open("a") as handle:
        handle.write(json.dumps(segment.close_entry())[:30])  # the writer died mid-line
    index = read_index(tmp_path)
    assert [s.seq for s in index.segments] == [1] and index.segments[0].end is None
    assert clock.seconds(0) == 1.5 and clock.seconds(90000) == 2.5


# -- retention --------------------------------------------------------------------------------------------------

def test_retention_by_age_and_size_never_takes_what_is_held(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    fake_archive(folder, [(10.0 * k, 10.0 * (k + 1)) for k in range(10)], open_last=True)
    now = STARTED + timedelta(seconds=100)
    index = read_index(folder)
    by_age = plan_removal(index, RetentionPolicy(max_age=timedelta(seconds=45)), now=now, held=[(12.0, 18.0)])
    assert [s.seq for s, _ in by_age] == [1, 3, 4, 5]  # ended more than 45 s ago, but segment 2 is held
    assert all("older than" in reason for _, reason in by_age)
    by_size = plan_removal(index, RetentionPolicy(max_bytes=3500), now=now, held=[(25.0, 31.0)], hold_from=80.0)
    # 10 segments of 1000 bytes: the oldest unheld go until 3500 are left; 3 and 4 (held) and 9-10 stay
    assert [s.seq for s, _ in by_size] == [1, 2, 5, 6, 7, 8]
    nothing = plan_removal(index, RetentionPolicy(max_bytes=0), now=now, hold_from=0.0)
    assert nothing == []  # an open event from the start holds everything
    all_closed = plan_removal(index, RetentionPolicy(max_bytes=0), now=now)
    assert [s.seq for s, _ in all_closed] == list(range(1, 10))  # never the segment being written

    # (the segment being written counts 0 bytes until it is closed)
    done = apply_retention(folder, RetentionPolicy(max_bytes=1500), now=now, held=[(25.0, 31.0)], hold_from=80.0)
    assert [s.seq for s in done.removed] == [1, 2, 5, 6, 7, 8] and done.removed_bytes == 6000
    assert done.kept_bytes == 3000 and done.over_limit  # still over: the rest is held
    assert sorted(p.name for p in folder.glob("seg-*")) == [f"seg-{n:08d}.ts" for n in (3, 4, 9, 10)]
    after = read_index(folder)
    assert [s.seq for s in after.segments] == [3, 4, 9, 10]
    assert [(r.start, r.end, r.segments) for r in after.removed] == [(0.0, 20.0, 2), (40.0, 80.0, 4)]
    with pytest.raises(ArchiveError, match=r"recording seconds 40.00-80.00 are no longer archived \(retention"):
        list(iter_archive_frames(folder, 50.0, 55.0))
    assert after.next_seq == 11
    apply_retention(folder, RetentionPolicy(max_bytes=0), now=now)
    emptied = read_index(folder)
    assert [s.seq for s in emptied.segments] == [10] and emptied.next_seq == 11  # numbers are never reused
    assert [(r.start, r.end) for r in emptied.removed] == [(0.0, 90.0)]  # merged into one span
