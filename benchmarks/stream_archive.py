"""Benchmark: what archiving a live stream costs the reader, and the disk it takes.

The reader (``ingest.stream.iter_stream_clips``: demux, decode, sample, scale to the model's size) reads a stream
served by ``ffmpeg`` on loopback, once without an archive and once with one, alternating, in the same run; the
CPU time of this process (all its threads: decoder, encoder) is divided by the stream seconds read. The stream
is served as fast as the reader takes it (no ``-re``), so a run measures work, not waiting. No model: scoring
costs the same with or without an archive.

Cases:
- ``ward 320x240``: the synthetic ward video at the test resolution (15 fps, H.264, a keyframe every second, as
  the server tests stream it): the archive remuxes (no decode or encode of its own);
- ``camera 720p``: the camera-like 720p file of benchmarks/camera_video.py (25 fps, 3 Mb/s): remux again;
- ``ward 320x240 mjpeg``: the same ward video sent as MJPEG, which the archive encodes to H.264 (x264 veryfast).

Printed per case: CPU seconds per stream second without and with the archive, their ratio (median of
``--repeat`` alternating pairs), the archive's own share measured inside the run with the archive (the reader
thread's CPU time spent in the writer's calls; exact for remux, where all the work is on that thread, a lower
bound for encode, whose x264 threads are not counted), and the archive's bytes per hour of stream. The two
whole-process figures come from different runs and vary by 10-20% on a shared machine; the share does not.

Usage: ``.venv/bin/python benchmarks/stream_archive.py [--seconds 120] [--repeat 3] [--cases ward,camera,mjpeg]``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.camera_video import CameraSpec, cached  # noqa: E402
from ingest.archive import ArchiveSpec, read_index  # noqa: E402
from ingest.archive_writer import StreamArchiveWriter  # noqa: E402
from ingest.clips import ClipSpec, IngestReport  # noqa: E402
from ingest.errors import StreamError  # noqa: E402
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips  # noqa: E402
from ingest.synthetic import SynthConfig, generate  # noqa: E402

SPEC = ClipSpec(clip_seconds=2.0, stride_seconds=2.0, sample_fps=8.0, size=(112, 112))  # the demo model's


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _TimedWriter(StreamArchiveWriter):
    """The writer, adding the calling thread's CPU time spent in its calls to ``spent``."""

    spent = 0.0

    def packet(self, packet):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        super().packet(packet)
        self.spent += time.thread_time() - t0

    def frame(self, frame, timing):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        super().frame(frame, timing)
        self.spent += time.thread_time() - t0

    def disconnect(self) -> None:
        t0 = time.thread_time()
        super().disconnect()
        self.spent += time.thread_time() - t0


def read_once(video: Path, fmt: str, archive_dir: Path | None) -> tuple[float, float, int, float]:
    """Read the whole served stream; (CPU seconds of this process, stream seconds read, archive bytes, CPU
    seconds in the writer's calls)."""
    port = _port()
    server = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-c", "copy", "-f", fmt,
                               f"tcp://127.0.0.1:{port}?listen=1"])
    writer = _TimedWriter(archive_dir, ArchiveSpec(segment_seconds=10.0)) if archive_dir else None
    report, stop = IngestReport(), threading.Event()
    spec = StreamSpec(f"tcp://127.0.0.1:{port}", options={"analyzeduration": "300000", "probesize": "65536"})
    first: float | None = None
    last = 0.0
    cpu0 = time.process_time()
    try:  # the file served, the connection ends and the few reconnects fail: StreamError ends the read
        for clip in iter_stream_clips(spec, SPEC, stop=stop, report=report, archive=writer,
                                      reconnect=ReconnectPolicy(0.2, 0.2, max_attempts=25)):
            first = clip.start if first is None else first
            last = clip.end
    except StreamError:
        pass
    finally:
        if writer is not None:
            writer.close()
        cpu = time.process_time() - cpu0
        server.kill()
        server.wait()
    size = read_index(archive_dir).bytes if archive_dir else 0
    return cpu, last - (first or 0.0), size, writer.spent if writer is not None else 0.0


def _ward(folder: Path, seconds: float) -> tuple[Path, Path]:
    """The ward video as the tests stream it (H.264, keyframe every second), and as MJPEG in Matroska."""
    raw = generate(folder, SynthConfig(seconds=seconds, seed=11, events_per_minute=5)).video
    h264, mjpeg = folder / "ward_h264.mp4", folder / "ward_mjpeg.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-c:v", "libx264", "-preset", "veryfast", "-crf",
                    "18", "-g", "15", "-keyint_min", "15", "-sc_threshold", "0", str(h264)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-c:v", "mjpeg", "-q:v", "3", str(mjpeg)],
                   check=True)
    return h264, mjpeg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="ward,camera,mjpeg")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "wardwatch-bench-archive")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each run ends with "stream dropped ... unavailable": expected
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg CLI not found")
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = args.cases.split(",")
    cases: list[tuple[str, Path, str]] = []
    if "ward" in wanted or "mjpeg" in wanted:
        h264, mjpeg = _ward(args.out, args.seconds)
        if "ward" in wanted:
            cases.append(("ward 320x240 h264 (remux)", h264, "mpegts"))
        if "mjpeg" in wanted:
            cases.append(("ward 320x240 mjpeg (encode)", mjpeg, "matroska"))
    if "camera" in wanted:
        cases.append(("camera 1280x720 h264 (remux)", cached(args.out, CameraSpec(seconds=args.seconds)), "mpegts"))

    print(f"{'case':32} {'CPU s/stream s':>15} {'with archive':>13} {'ratio':>6} {'in writer':>10} "
          f"{'writer share':>13} {'archive MiB/h':>14}")
    for name, video, fmt in cases:
        plain, archived, ratios, own, share, per_hour = [], [], [], [], [], []
        for attempt in range(args.repeat):
            folder = args.out / f"archive-{attempt}"
            shutil.rmtree(folder, ignore_errors=True)
            cpu_a, secs_a, _, _ = read_once(video, fmt, None)
            cpu_b, secs_b, size, spent = read_once(video, fmt, folder)
            plain.append(cpu_a / secs_a)
            archived.append(cpu_b / secs_b)
            ratios.append((cpu_b / secs_b) / (cpu_a / secs_a))
            own.append(spent / secs_b)
            share.append(spent / cpu_b)
            per_hour.append(size / secs_b * 3600 / 2**20)
        print(f"{name:32} {statistics.median(plain):15.4f} {statistics.median(archived):13.4f} "
              f"{statistics.median(ratios):6.3f} {statistics.median(own):10.5f} {statistics.median(share):13.3f} "
              f"{statistics.median(per_hour):14.1f}")


if __name__ == "__main__":
    main()
