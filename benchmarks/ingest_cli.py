"""Benchmark: ``wardwatch ingest FILE --no-score --size 112 112`` against FFmpeg's decode+scale, as a user runs them.

Why the whole command and not the library: what a user waits for includes the interpreter start, every
import the command pulls in and the probe, and what the machine's memory must hold includes everything
imported (torch alone is ~650 MB resident). The baseline is the command from issue 12,
``ffmpeg -threads 2 -i FILE -vf scale=112:112 -pix_fmt rgb24 -f null -``, run on the same camera-like
720p file (benchmarks/camera_video.py) in the same run, alternating with ours, best of ``--repeat``.

Printed:
- per video length (60 s and 120 s by default): wall and CPU seconds of both, the speed ratio
  (ffmpeg wall / ours wall: >= 1.0 means ours is at least as fast), and both peak RSS values
  (``/usr/bin/time``'s maximum resident set size of each child); with ``--compare DIR`` also for the
  CLI of another checkout (e.g. ``/work/main`` before a change), so before and after come from one run;
- what the command imports (``python -X importtime`` on a short clip): total import time, module count,
  whether torch, SQLAlchemy, pydantic, FastAPI or Celery were loaded, and the costliest top-level imports;
- with ``--profile``: where the time goes inside one ingest of the 60 s file (cProfile, main thread),
  grouped into decode, scale/convert, demux, timing, clip assembly, probe/open, and the rest.

Usage: ``.venv/bin/python benchmarks/ingest_cli.py [--seconds 60,120] [--repeat 3] [--profile]
[--compare /work/main] [--out /tmp/wardwatch-bench]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.camera_video import CameraSpec, cached  # noqa: E402

HEAVY = ("torch", "torchvision", "sqlalchemy", "pydantic", "fastapi", "celery")


@dataclass(frozen=True)
class Run:
    """One child process: wall and CPU (user + sys) seconds, peak resident memory in MiB."""

    wall: float
    cpu: float
    rss_mib: float


def run_child(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to completion under ``/usr/bin/time`` and measure it alone.

    Why ``/usr/bin/time`` and not ``os.wait4`` here: a child's ``ru_maxrss`` also counts the address space
    it ran in before ``exec`` -- with ``vfork`` the parent's own -- so measuring from this process can
    report the parent's memory; ``time`` is a tiny process of its own.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        timed = ["/usr/bin/time", "-o", out.name, "-f", "%e %U %S %M", *cmd]
        done = subprocess.run(timed, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        wall, user, system, max_kib = out.read().split()[-4:]
    return Run(float(wall), float(user) + float(system), int(max_kib) / 1024)


def ffmpeg_cmd(video: Path, size: tuple[int, int]) -> list[str]:
    """The baseline of issue 12: two decoder threads, scale every frame to the model size, RGB, discard."""
    return ["ffmpeg", "-v", "error", "-nostdin", "-threads", "2", "-i", str(video),
            "-vf", f"scale={size[0]}:{size[1]}", "-pix_fmt", "rgb24", "-f", "null", "-"]


def cli_cmd(video: Path, size: tuple[int, int], *extra: str) -> list[str]:
    return [sys.executable, *extra, "-m", "server.cli", "ingest", str(video), "--no-score",
            "--size", str(size[0]), str(size[1]), "--json"]


def checkout_env(checkout: Path) -> dict[str, str]:
    """Environment that makes ``checkout``'s code win over any installed copy."""
    return {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}


def best(runs: list[Run]) -> Run:
    """Least disturbed run: shortest wall; CPU and RSS from the same list's minimum / maximum."""
    return Run(min(r.wall for r in runs), min(r.cpu for r in runs), max(r.rss_mib for r in runs))


def bench_video(video: Path, size: tuple[int, int], repeat: int, checkouts: dict[str, Path]) -> dict[str, Run]:
    """Alternate ffmpeg and each checkout's CLI ``repeat`` times (so load hits them alike); best of each."""
    runs: dict[str, list[Run]] = {"ffmpeg": [], **{name: [] for name in checkouts}}
    for _ in range(repeat):
        runs["ffmpeg"].append(run_child(ffmpeg_cmd(video, size)))
        for name, checkout in checkouts.items():
            runs[name].append(run_child(cli_cmd(video, size), cwd=checkout, env=checkout_env(checkout)))
    return {name: best(r) for name, r in runs.items()}


def imports(video: Path, size: tuple[int, int], checkout: Path) -> dict[str, object]:
    """What ``wardwatch ingest --no-score`` imports: from ``-X importtime`` of a real run."""
    done = subprocess.run(cli_cmd(video, size, "-X", "importtime"), cwd=checkout, env=checkout_env(checkout),
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append((int(self_us), int(cumulative_us), name))
    names = {name.strip() for _, _, name in rows}
    top_level = sorted(((c, n.strip()) for _, c, n in rows if not n.startswith("  ")), reverse=True)[:6]
    return {
        "total_ms": round(sum(s for s, _, _ in rows) / 1000),
        "modules": len(rows),
        "heavy": [h for h in HEAVY if h in names],
        "top": [f"{n} {c / 1000:.0f} ms" for c, n in top_level],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", default="60,120", help="comma-separated video lengths")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", default="3M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", default="112x112")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="also time the CLI of this checkout (repeatable), e.g. /work/main")
    parser.add_argument("--profile", action="store_true", help="cProfile one ingest of the first video")
    parser.add_argument("--out", type=Path, default=Path("/tmp/wardwatch-bench"), help="video cache")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    assert len(size) == 2
    checkouts = {"ours": REPO, **{str(p): p.resolve() for p in args.compare}}
    lengths = [float(v) for v in args.seconds.split(",")]
    videos = {s: cached(args.out, CameraSpec(seconds=s, fps=args.fps, bitrate=args.bitrate)) for s in lengths}
    short = cached(args.out, CameraSpec(seconds=2, fps=args.fps, width=320, height=180, bitrate="500k"))

    print(f"camera-like 1280x720 H.264 at {args.fps} fps, {args.bitrate}b/s; best of {args.repeat}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    print("\n| video | command | wall s | CPU s | speed vs ffmpeg (wall) | (CPU) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for seconds, video in videos.items():
        results = bench_video(video, size, args.repeat, checkouts)
        base = results["ffmpeg"]
        for name, r in results.items():
            print(f"| {seconds:g} s | {name} | {r.wall:.2f} | {r.cpu:.2f} | {base.wall / r.wall:.2f}x "
                  f"| {base.cpu / r.cpu:.2f}x | {r.rss_mib:.0f} |", flush=True)
    print()
    for name, checkout in checkouts.items():
        print(f"imports of `wardwatch ingest --no-score` ({name}): {json.dumps(imports(short, size, checkout))}")
    if args.profile:
        from benchmarks.ingest_profile import profile_ingest

        print()
        profile_ingest(videos[lengths[0]], size)


if __name__ == "__main__":
    main()
