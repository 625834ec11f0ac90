"""Live streams against a real ffmpeg server on loopback: clips, wall clock, reconnect, gaps, stop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ingest.clips import ClipSpec, IngestReport
from ingest.errors import InvalidVideoError, StreamError
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips, redact_url, validate_stream_url

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")

SPEC = ClipSpec(clip_seconds=0.5, stride_seconds=0.5, sample_fps=4.0, size=(32, 24))
FAST_RETRY = ReconnectPolicy(initial_delay=0.1, max_delay=0.4, max_attempts=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """``ffmpeg -re`` serving a file as MPEG-TS over TCP to the first client that connects."""

    def __init__(self, video: Path) -> None:
        self.video = video
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(self.video), "-c", "copy", "-f", "mpegts"]
        self.proc = subprocess.Popen([*cmd, f"{self.url}?listen=1"])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def server(make_video):
    video = make_video("live.mp4", n_frames=90, fps=15, size=(64, 48), codec_options={"preset": "ultrafast", "g": "15"})
    srv = _Server(video)
    yield srv
    srv.kill()


def _spec(url: str) -> StreamSpec:
    # small probe so the first clip comes quickly; short timeouts so a stall is noticed in the test
    options = {"analyzeduration": "300000", "probesize": "32768"}
    return StreamSpec(url, open_timeout=3.0, read_timeout=2.0, options=options)


def test_clips_reconnect_gap_and_stop(server):
    started = datetime(2024, 6, 1, 3, 0, tzinfo=UTC)
    server.start()
    stop, report, clips = threading.Event(), IngestReport(), []
    t0 = time.monotonic()
    for clip in iter_stream_clips(
        _spec(server.url), SPEC, started_at=started, stop=stop, reconnect=FAST_RETRY, report=report
    ):
        clips.append(clip)
        if len(clips) == 3:  # the camera goes away for a moment, then comes back
            server.kill()
            time.sleep(0.5)
            server.start()
        if len(clips) == 7:
            stop.set()
            stopped_at = time.monotonic()
    ended = time.monotonic()
    assert ended - stopped_at < 0.5, "stop must end the iteration promptly"
    assert ended - t0 < 20

    assert [c.index for c in clips] == list(range(7))  # indices continue across the reconnect
    assert len(report.gaps) == 1
    gap_start, gap_end = report.gaps[0]
    assert gap_end - gap_start > 0.4  # the outage lasted at least the 0.5 s the server was down
    # No clip spans the outage. (Which clip comes first after it depends on how much the socket had
    # buffered when the server died, so check every clip rather than a fixed index.)
    eps = 1e-6
    for c in clips:
        before = bool(np.all(c.timestamps <= gap_start + eps))
        after = bool(np.all(c.timestamps >= gap_end - eps))
        assert before or after, (report.gaps, c.index, list(c.timestamps))
    assert any(c.start >= gap_end - eps for c in clips) and any(c.timestamps[-1] <= gap_start + eps for c in clips)
    assert any("stream dropped" in e for e in report.errors)
    for c in clips:
        assert c.frames.shape == (2, 24, 32, 3) and c.frames.dtype == np.uint8
        assert c.start_wall == started + timedelta(seconds=c.start)
        assert c.end_wall == started + timedelta(seconds=c.end)
    starts = [c.start for c in clips]
    assert starts == sorted(starts)
    frame_indices = np.concatenate([c.frame_indices for c in clips])
    assert np.all(np.diff(frame_indices) > 0)  # frame indices continue too
    assert report.clips == 7 and report.frames > 0


def test_wall_clock_defaults_to_connection_time(server):
    server.start()
    stop = threading.Event()
    before = datetime.now(UTC)
    clips = []
    for clip in iter_stream_clips(_spec(server.url), SPEC, stop=stop, reconnect=FAST_RETRY):
        clips.append(clip)
        stop.set()
    assert len(clips) == 1 and clips[0].start_wall is not None
    clip = clips[0]
    assert before - timedelta(seconds=1) <= clip.start_wall - timedelta(seconds=clip.start) <= datetime.now(UTC)


def test_gives_up_after_max_attempts():
    url = f"tcp://127.0.0.1:{_free_port()}"  # nobody listens
    report = IngestReport()
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.1, max_attempts=3)
    t0 = time.monotonic()
    with pytest.raises(StreamError, match="after 3 attempts"):
        next(iter_stream_clips(_spec(url), SPEC, reconnect=policy, report=report))
    assert time.monotonic() - t0 < 5
    assert report.errors and "unavailable" in report.errors[-1]


def test_stop_interrupts_the_backoff_wait():
    url = f"tcp://127.0.0.1:{_free_port()}"
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    slow = ReconnectPolicy(initial_delay=30, max_delay=60)
    clips = list(iter_stream_clips(_spec(url), SPEC, stop=stop, reconnect=slow))
    assert clips == [] and time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "unsupported stream URL scheme 'file'"),
        ("/var/video/cam.mp4", "unsupported stream URL scheme 'none'"),
        ("concat:a.mp4|b.mp4", "unsupported stream URL scheme"),
        ("gopher://cam.local/1", "unsupported stream URL scheme 'gopher'"),
        ("rtsp://", "no host"),
        ("tcp://0.0.0.0:554?listen=1", "listen"),
        ("http://cam.local/a b", "whitespace"),
        ("", "empty"),
    ],
)
def test_refused_urls(url, message):
    with pytest.raises(InvalidVideoError, match=message):
        validate_stream_url(url)
    with pytest.raises(InvalidVideoError):
        next(iter_stream_clips(url, SPEC))


def test_accepted_urls_and_options():
    for url in (
        "rtsp://cam/stream1",
        "rtmp://relay/live/cam",
        "https://nvr/hls/cam.m3u8",
        "udp://@:5000",
        "tcp://10.0.0.5:9000",
        "HTTP://CAM/x",
    ):
        assert validate_stream_url(url) == url
    rtsp = StreamSpec("rtsp://cam/s", read_timeout=2.5).ffmpeg_options()
    assert rtsp["rtsp_transport"] == "tcp" and rtsp["timeout"] == "2500000"
    assert "file" not in rtsp["protocol_whitelist"].split(",")
    assert StreamSpec("tcp://h:1", read_timeout=1).ffmpeg_options()["rw_timeout"] == "1000000"


def test_credentials_are_redacted():
    assert redact_url("rtsp://admin:s3cret@10.0.0.7:554/live") == "rtsp://***@10.0.0.7:554/live"
    assert redact_url("http://cam/live?channel=1&token=abc&flag") == "http://cam/live?channel=***&token=***&***"
    assert redact_url("rtsp://10.0.0.7/live") == "rtsp://10.0.0.7/live"
    with pytest.raises(StreamError) as excinfo:
        next(
            iter_stream_clips(
                f"tcp://user:s3cret@127.0.0.1:{_free_port()}",
                SPEC,
                reconnect=ReconnectPolicy(0.01, 0.01, max_attempts=1),
            )
        )
    assert "s3cret" not in str(excinfo.value)


def test_reconnect_policy():
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=4.0, multiplier=2.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    with pytest.raises(ValueError):
        ReconnectPolicy(initial_delay=2.0, max_delay=1.0)
    with pytest.raises(ValueError):
        ReconnectPolicy(max_attempts=0)


def test_stream_without_video_is_refused_not_retried():
    port = _free_port()
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "mp2"]
    proc = subprocess.Popen([*cmd, "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"])
    try:
        policy = ReconnectPolicy(initial_delay=0.1, max_delay=0.2, max_attempts=30)
        with pytest.raises(InvalidVideoError, match="no video stream"):
            next(iter_stream_clips(_spec(f"tcp://127.0.0.1:{port}"), SPEC, reconnect=policy))
    finally:
        proc.kill()
        proc.wait()
