"""Camera-like benchmark video: 720p H.264 with texture, motion and sensor noise at an IP camera's bitrate.

Why not the synthetic ward video: its flat walls and solid shapes compress far better than real footage,
so an H.264 decoder spends much less time per frame on it than on a camera's. Decode cost follows the
bits per frame, and a camera's come from texture everywhere plus sensor noise that changes every frame.
This makes such a file with FFmpeg's own sources, deterministically (seeded) and quickly (~1 s of CPU per
2-3 s of video at 720p):

- a static, finely textured background (a Mandelbrot detail rendered once: edges at every scale),
- a moving, changing object (``testsrc2``, a quarter of the frame, gliding around),
- a slow brightness drift (auto exposure) and desaturated colour,
- temporal sensor noise (``noise=alls=16:allf=t+u``, new every frame),
- encoded like an IP camera: x264 ``veryfast``, main profile, constant bitrate (3 Mb/s by default),
  a keyframe every 2 s; no B-frames by default (most cameras send none; ``bframes`` adds them).

Usage: ``.venv/bin/python benchmarks/camera_video.py OUT.mp4 [--seconds 60] [--fps 25] [--bitrate 3M]``;
or :func:`camera_video` from another benchmark (benchmarks/decode.py, benchmarks/ingest_cli.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CameraSpec:
    """What to generate: size, frame rate, length, bitrate, B-frames and the noise seed."""

    seconds: float = 60.0
    fps: int = 25
    width: int = 1280
    height: int = 720
    bitrate: str = "3M"
    bframes: int = 0
    seed: int = 0

    @property
    def name(self) -> str:
        """A file name that identifies the spec, for caching."""
        b = f"_bf{self.bframes}" if self.bframes else ""
        return f"camera_{self.width}x{self.height}_{self.fps}fps_{self.seconds:g}s_{self.bitrate}{b}_s{self.seed}.mp4"


def bits_per_second(rate: str) -> int:
    """``"3M"`` -> 3000000, ``"2500k"`` -> 2500000, ``"800000"`` -> 800000."""
    scale = {"k": 1_000, "M": 1_000_000}.get(rate[-1:], 1)
    return int(float(rate[:-1] if scale > 1 else rate) * scale)


def _filter_graph(spec: CameraSpec) -> str:
    w, h, fps = spec.width, spec.height, spec.fps
    fg_w, fg_h = (w * 3 // 8) // 2 * 2, (h * 3 // 8) // 2 * 2
    background = (
        f"mandelbrot=s={w}x{h}:r={fps}:maxiter=300:start_x=-0.743643887037151:start_y=0.13182590420533"
        ":start_scale=0.02:end_scale=0.02:outer=normalized_iteration_count"
        f",trim=end_frame=1,loop=loop=-1:size=1,setpts=N/{fps}/TB,format=yuv420p[bg]"
    )
    moving = f"testsrc2=s={fg_w}x{fg_h}:r={fps},format=yuv420p[fg]"
    x, y = f"{(w - fg_w) // 2}+{(w - fg_w) // 2 - 10}*sin(t/3)", f"{(h - fg_h) // 2}+{(h - fg_h) // 2 - 10}*cos(t/5)"
    camera = (
        f"[bg][fg]overlay=x='{x}':y='{y}',hue=s=0.6,eq=brightness='0.04*sin(2*PI*t/10)':eval=frame"
        f",noise=alls=16:allf=t+u:all_seed={spec.seed},format=yuv420p"
    )
    return ";".join((background, moving, camera))


def camera_video(path: Path, spec: CameraSpec = CameraSpec()) -> Path:
    """Write the camera-like video to ``path`` (an existing file is kept: generation is deterministic)."""
    if path.exists():
        return path
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg CLI not found (apt-get install ffmpeg)")
    gop = 2 * spec.fps
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-filter_complex", _filter_graph(spec), "-t", f"{spec.seconds:g}"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-bf", str(spec.bframes)]
    cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    # Constant bitrate as cameras send it: the rate is also the cap, over a two-second buffer.
    cmd += ["-b:v", spec.bitrate, "-maxrate", spec.bitrate, "-bufsize", str(2 * bits_per_second(spec.bitrate))]
    part = path.with_name(path.stem + ".part.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", "-an", str(part)], check=True)
    part.rename(path)
    return path


def cached(folder: Path, spec: CameraSpec = CameraSpec()) -> Path:
    """The video for ``spec`` in ``folder``, generated on first use."""
    return camera_video(folder / spec.name, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--bitrate", default="3M", help="e.g. 2M, 4M, 2500k")
    parser.add_argument("--bframes", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    spec = CameraSpec(seconds=args.seconds, fps=args.fps, width=w, height=h, bitrate=args.bitrate,
                      bframes=args.bframes, seed=args.seed)
    video = camera_video(args.out, spec)
    print(f"{video}: {video.stat().st_size * 8 / spec.seconds / 1e6:.2f} Mb/s", file=sys.stderr)


if __name__ == "__main__":
    main()
