"""Benchmark: our decode + resize (ingest.decode.iter_frames) against the ffmpeg CLI doing the same work.

Three measurements per video and thread count, all in the same run so the machine's load affects them alike:

1. **Full decode**: every frame decoded and scaled to the model size as RGB -- ours with
   ``iter_frames(path, sample_fps=None, size=(W, H), threads=N)``, the baseline with
   ``ffmpeg -threads N -i FILE -filter_threads N -vf scale=W:H -pix_fmt rgb24 -f null -``.
   A ratio near 1 means PyAV adds little over FFmpeg itself (target: >= 0.9x).
2. **Sampled decode** at the model rate (``--sample-fps``, 8 of 30 fps by default), what ingest really does:
   the default path (every packet decoded, only kept frames converted) against ``skip_unneeded=True``
   (non-reference frames that are not kept, and GOPs without a kept frame, are never decoded). Both give
   the same frames (checked here on the first 300 of them, and in tests/ingest/test_decode_planning.py).
3. Optionally (``--camera-style``) the same on an "IP camera" encode of the 720p file (no B-frames,
   one keyframe per second), where skipping only helps sampling sparser than the keyframe interval.
4. Always, the same on a **camera-like** 720p file (benchmarks/camera_video.py: texture, motion and
   sensor noise at 3 Mb/s constant bitrate, no B-frames, a keyframe every 2 s). The synthetic ward
   video compresses far better than camera footage, so its rows flatter the decoder; this row is the
   one to quote for real cameras (issue 12). ``--no-camera-like`` leaves it out.

Usage: ``.venv/bin/python benchmarks/decode.py [--seconds 60] [--fps 30] [--sizes 1280x720,1920x1080]
[--threads 1,2] [--out DIR] [--camera-style] [--no-camera-like]``. Generated videos are cached in ``--out`` (default: a
temporary directory, deleted afterwards); generating 60 s of 1080p takes a few minutes.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.camera_video import CameraSpec, cached  # noqa: E402
from ingest.decode import iter_frames  # noqa: E402
from ingest.probe import probe  # noqa: E402
from ingest.synthetic import SynthConfig, generate  # noqa: E402

Timing = tuple[int, float, float]  # frames yielded, wall seconds, CPU seconds


def _video(out: Path, width: int, height: int, seconds: float, fps: int) -> Path:
    folder = out / f"ward_{width}x{height}_{seconds:g}s_{fps}fps"
    video = folder / "ward.mp4"
    if not video.exists():
        t0 = time.perf_counter()
        generate(folder, SynthConfig(seconds=seconds, seed=0, width=width, height=height, fps=fps))
        print(f"  generated {width}x{height} {seconds:g} s in {time.perf_counter() - t0:.1f} s", flush=True)
    return video


def _camera_style(source: Path) -> Path:
    """Re-encode like a typical IP camera: H.264 main profile, no B-frames, a keyframe every second."""
    video = source.with_name("camera_style.mp4")
    if not video.exists():
        fps = round(probe(source).fps)
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(source), "-c:v", "libx264", "-preset", "veryfast"]
        cmd += ["-profile:v", "main", "-bf", "0", "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0"]
        subprocess.run([*cmd, "-an", str(video)], check=True)
    return video


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _ours(video: Path, size: tuple[int, int], sample_fps: float | None, threads: int, skip: bool) -> Timing:
    """(frames yielded, wall seconds, CPU seconds of this process, decoder threads included)."""
    c0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    n = sum(1 for _ in iter_frames(video, sample_fps=sample_fps, size=size, threads=threads, skip_unneeded=skip))
    return n, time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0


def _ffmpeg(video: Path, size: tuple[int, int], threads: int) -> Timing:
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-threads", str(threads), "-i", str(video)]
    cmd += ["-filter_threads", str(threads), "-vf", f"scale={size[0]}:{size[1]}"]
    cmd += ["-pix_fmt", "rgb24", "-f", "null", "-"]
    c0, t0 = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True)
    return 0, time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0


def _same_frames(video: Path, size: tuple[int, int], sample_fps: float, n: int = 300) -> bool:
    """The skip path gives the default path's frames (indices, times, pixels) -- checked on ``n`` frames."""
    a = islice(iter_frames(video, sample_fps=sample_fps, size=size), n)
    b = islice(iter_frames(video, sample_fps=sample_fps, size=size, skip_unneeded=True), n)
    return all(x[0] == y[0] and x[1] == y[1] and np.array_equal(x[2], y[2]) for x, y in zip(a, b, strict=True))


def _best(repeat: int, run: Callable[..., Timing], *args: object) -> tuple[float, float]:
    """Shortest wall and CPU seconds over ``repeat`` runs of ``run(*args)`` (the least disturbed by other load)."""
    timings = [run(*args) for _ in range(repeat)]
    return min(t[1] for t in timings), min(t[2] for t in timings)


def _bench(video: Path, label: str, args: argparse.Namespace, size: tuple[int, int], rows: list[str]) -> None:
    info = probe(video)
    frames = info.frame_count or round(info.duration * info.fps)
    same = _same_frames(video, size, args.sample_fps)
    for threads in args.thread_counts:
        ours = _best(args.repeat, _ours, video, size, None, threads, False)
        base = _best(args.repeat, _ffmpeg, video, size, threads)
        sampled = _best(args.repeat, _ours, video, size, args.sample_fps, threads, False)
        skipped = _best(args.repeat, _ours, video, size, args.sample_fps, threads, True)
        kept = _ours(video, size, args.sample_fps, threads, True)[0]
        row = (
            f"| {label} | {threads} | {frames / ours[0]:6.1f} | {frames / base[0]:6.1f} | {base[0] / ours[0]:4.2f}x "
            f"| {base[1] / ours[1]:4.2f}x | {frames / sampled[0]:6.1f} | {frames / skipped[0]:6.1f} "
            f"| {sampled[0] / skipped[0]:4.2f}x | {sampled[1] / skipped[1]:4.2f}x |"
        )
        rows.append(row)
        print(row, f"({kept} frames kept, skip path same frames: {same})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--threads", default="1,2", help="comma-separated decoder thread counts")
    parser.add_argument("--model-size", default="112x112")
    parser.add_argument("--sample-fps", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per measurement")
    parser.add_argument("--camera-style", action="store_true", help="also measure an IP-camera style encode")
    parser.add_argument("--no-camera-like", dest="camera_like", action="store_false",
                        help="leave out the camera-like 720p video (texture, motion, sensor noise, 3 Mb/s)")
    parser.add_argument("--out", type=Path, default=None, help="cache directory for generated videos")
    args = parser.parse_args()
    args.thread_counts = [int(v) for v in args.threads.split(",")]

    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg CLI not found (apt-get install ffmpeg)")
    mw, mh = (int(v) for v in args.model_size.split("x"))
    out = args.out or Path(tempfile.mkdtemp(prefix="wardwatch-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    print(
        f"decode + resize to {mw}x{mh} RGB, {args.seconds:g} s at {args.fps} fps, best of {args.repeat}; "
        "fps = source frames per wall-clock second; CPU ratios compare user+sys seconds (less sensitive to "
        "other load on the machine than wall time)",
        flush=True,
    )
    try:
        videos = []
        for spec in args.sizes.split(","):
            w, h = (int(v) for v in spec.split("x"))
            videos.append((f"{w}x{h} x264", _video(out, w, h, args.seconds, args.fps)))
        if args.camera_style:
            videos.append((videos[0][0].replace("x264", "camera-style"), _camera_style(videos[0][1])))
        if args.camera_like:
            videos.append(("1280x720 camera-like 3 Mb/s", cached(out, CameraSpec(seconds=args.seconds, fps=args.fps))))
        for label, video in videos:
            _bench(video, label, args, (mw, mh), rows)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    sf = f"{args.sample_fps:g}"
    print(
        "\n| video | threads | ours fps | ffmpeg CLI fps | ours/ffmpeg (wall) | ours/ffmpeg (CPU) "
        f"| sampled {sf} fps: default fps | skip_unneeded fps | speedup (wall) | speedup (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
