"""Benchmark: peak memory (RSS) while a long recording streams through ``iter_clips``.

Why: recordings run for 24 hours; ingest must hold only a clip's worth of frames, whatever the length.
This ingests a 1-hour synthetic 720p recording (by default) in a fresh child process and reports its
resident memory: after imports and probing (the baseline), the peak (``VmHWM``), and RSS samples every
10 minutes of video, so a leak would show as a rising series, not only as a high peak.

The recording is made once and cached: 60 s of synthetic ward video are generated, then repeated with
``ffmpeg -f concat -c copy`` (seconds instead of the ~1.5 hours rendering an hour would take). The clips
are dropped after counting, as the server does once a batch is scored and committed.

Usage: ``.venv/bin/python benchmarks/ingest_memory.py [--hours 1] [--size 1280x720] [--fps 15]
[--out /tmp/wardwatch-bench] [--threads N] [--skip-unneeded]``
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.clips import ClipSpec, IngestReport, iter_clips  # noqa: E402
from ingest.probe import probe  # noqa: E402
from ingest.synthetic import SynthConfig, generate  # noqa: E402

_SAMPLE_EVERY_SECONDS = 600.0  # of video


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM, ...) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _recording(out: Path, hours: float, width: int, height: int, fps: int) -> Path:
    """The cached long recording, made by repeating a generated 60 s piece."""
    video = out / f"ward_{width}x{height}_{fps}fps_{hours:g}h.mp4"
    if video.exists():
        return video
    piece_dir = out / f"ward_{width}x{height}_60s_{fps}fps"
    piece = piece_dir / "ward.mp4"
    if not piece.exists():
        t0 = time.perf_counter()
        generate(piece_dir, SynthConfig(seconds=60, seed=0, width=width, height=height, fps=fps))
        print(f"generated the 60 s piece in {time.perf_counter() - t0:.0f} s", flush=True)
    listing = out / f"concat_{width}x{height}_{fps}fps_{hours:g}h.txt"
    listing.write_text("".join(f"file '{piece}'\n" for _ in range(round(hours * 60))))
    tmp = video.with_suffix(".part.mp4")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    subprocess.run([*cmd, "-c", "copy", "-movflags", "+faststart", str(tmp)], check=True)
    tmp.rename(video)
    return video


def _child(video: Path, threads: int | None, skip: bool) -> None:
    """Ingest ``video`` and print one JSON line of measurements (runs in a fresh process)."""
    spec = ClipSpec()  # 2 s clips at 8 fps, 112x112: the model's input
    info = probe(video)
    baseline = _status_kib("VmRSS")
    report = IngestReport()
    samples: list[tuple[float, int]] = []
    next_sample = 0.0
    t0 = time.perf_counter()
    for clip in iter_clips(video, spec, report=report, threads=threads, skip_unneeded=skip):
        if clip.start >= next_sample:
            samples.append((round(clip.start), _status_kib("VmRSS")))
            next_sample += _SAMPLE_EVERY_SECONDS
    wall = time.perf_counter() - t0
    result = {
        "video_seconds": info.duration,
        "size": f"{info.width}x{info.height}",
        "fps": info.fps,
        "clips": report.clips,
        "frames": report.frames,
        "errors": report.errors,
        "wall_seconds": round(wall, 1),
        "baseline_rss_mib": round(baseline / 1024, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mib_by_video_second": [(t, round(kib / 1024, 1)) for t, kib in samples],
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("/tmp/wardwatch-bench"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-unneeded", action="store_true")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.threads, args.skip_unneeded)
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg CLI not found (apt-get install ffmpeg)")
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    video = _recording(args.out, args.hours, width, height, args.fps)
    print(f"ingesting {video} ({video.stat().st_size / 1e9:.2f} GB) in a fresh process ...", flush=True)
    cmd = [sys.executable, __file__, "--child", str(video)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.skip_unneeded:
        cmd.append("--skip-unneeded")
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    r = json.loads(line)
    print(json.dumps(r, indent=1))
    print(
        f"\n{r['video_seconds'] / 3600:.2f} h of {r['size']} at {r['fps']:g} fps -> {r['clips']} clips in "
        f"{r['wall_seconds'] / 60:.1f} min ({r['video_seconds'] / r['wall_seconds']:.1f}x real time): peak RSS "
        f"{r['peak_rss_mib']:.0f} MiB (after imports and probe: {r['baseline_rss_mib']:.0f} MiB); "
        f"RSS over the recording: {', '.join(f'{m:.0f}' for _, m in r['rss_mib_by_video_second'])} MiB"
    )


if __name__ == "__main__":
    main()
