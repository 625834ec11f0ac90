"""``wardwatch ingest --no-score`` stays light: no torch or model code imported, memory flat with video length.

Why in subprocesses: what a command imports and how much memory it holds are properties of a fresh
process (the test process has torch loaded already). Issue 12 measured 845 MB peak RSS, flat between
60 s and 120 s of video: torch's import, not frames; these tests keep both from coming back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.ingest.videos import write_video

# Runs the CLI in a fresh interpreter, then reports what it imported and its own peak RSS (VmHWM belongs to
# the address space and starts afresh at exec; a forked child's ru_maxrss would count the parent's pages).
_RUN_AND_REPORT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from server.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'model'})\n"
    "hwm = next(x for x in Path('/proc/self/status').read_text().splitlines() if x.startswith('VmHWM:'))\n"
    "print(json.dumps({'code': code, 'heavy': heavy, 'peak_rss_mib': int(hwm.split()[1]) / 1024}))\n"
)


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _ingest(video: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the CLI's JSON summary, what the process imported and its peak RSS) of a ``--no-score`` ingest."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, "ingest", str(video), "--no-score", "--json", *options],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert done.returncode == 0, done.stderr
    summary_line, report_line = done.stdout.strip().splitlines()[-2:]
    return json.loads(summary_line), json.loads(report_line)


def test_no_score_ingest_imports_no_torch_or_model_code(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n_frames=45, fps=15)
    summary, report = _ingest(video, "--size", "32", "24")
    assert summary["clips"] == 1 and summary["errors"] == []  # 3 s at 8 fps: one 2 s clip, the rest dropped
    assert report["code"] == 0 and report["heavy"] == []


def _peak_rss_mib(video: Path) -> float:
    """Peak RSS of a ``--no-score`` ingest of ``video`` that keeps every frame, upscaled to 320x240."""
    summary, report = _ingest(video, "--size", "320", "240", "--sample-fps", "25", "--clip-seconds", "1")
    assert summary["errors"] == [] and summary["clips"] > 0
    return float(report["peak_rss_mib"])


def test_no_score_ingest_memory_does_not_grow_with_the_video(tmp_path: Path) -> None:
    # Every frame kept and upscaled to 320x240 RGB (230 KB): holding the frames of the 20 s video would
    # take ~115 MB, of the 5 s one ~29 MB. Streaming holds one clip (25 frames, ~6 MB) either way.
    short = write_video(tmp_path / "short.mp4", n_frames=5 * 25, fps=25, size=(160, 120))
    long = write_video(tmp_path / "long.mp4", n_frames=20 * 25, fps=25, size=(160, 120))
    rss_short, rss_long = _peak_rss_mib(short), _peak_rss_mib(long)
    assert rss_long - rss_short < 25, (rss_short, rss_long)
    assert rss_long < 300, rss_long
