"""Where the time of one ``--no-score`` ingest goes: cProfile of ``server.offline.ingest_file``, grouped.

Why grouped: the profile of a decode loop is a handful of C calls (decode, reformat) and many small
Python frames around them; the question is how much is FFmpeg's unavoidable decode, how much the
scaling and colour conversion of the sampled frames, and how much our per-frame Python. cProfile sees
the main thread only: ``decode`` includes waiting for the decoder's frame threads, which is the point
(that wait is what the command's wall time is made of).

Also prints the decoder alternatives on the same file: PyAV with 1, 2 and FFmpeg's automatic number of
decoder threads (the same clips each time), and decord fetching the same sampled frames with its own
resize (which does not give the same pixels, so it is a reference, not a candidate).

Usage: ``.venv/bin/python benchmarks/ingest_profile.py FILE [--size 112x112]`` (also run by
``benchmarks/ingest_cli.py --profile``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.clips import ClipSpec, iter_clips  # noqa: E402
from server.offline import ingest_file  # noqa: E402

# (group, substrings of "file:function" that belong to it), first match wins.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (FFmpeg, incl. waiting for decoder threads)", ("'decode' of 'av.codec.context",)),
    ("scale + colour conversion (swscale)", ("'reformat' of", "'to_ndarray' of")),
    ("demux (reading packets)", ("(demux)", "'demux' of")),
    ("open + probe", ("av.container.core.open", "'decode' of 'av.packet", "probe.py", "_media.py")),
    ("clip assembly (cutter, np.stack)", ("_cutter.py", "build_clip", "numpy", "stack")),
    ("timing (timeline, sampler, fractions)", ("_timeline.py", "fractions.py")),
)


def _group(key: tuple[str, int, str]) -> str:
    label = f"{key[0]}:{key[1]}({key[2]})" if key[0] != "~" else key[2]
    for group, needles in GROUPS:
        if any(n in label for n in needles):
            return group
    return "other Python (loops, generators, logging)"


def profile_ingest(video: Path, size: tuple[int, int]) -> None:
    """Print the grouped self-time of one ingest and the decoder alternatives."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    summary = ingest_file(video, score=False, size=size)
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for key, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        groups[_group(key)] = groups.get(_group(key), 0.0) + tottime
    total = sum(groups.values())
    print(f"profile of ingest_file({video.name}, score=False, size={size}): {summary['clips']} clips, "
          f"{summary['frames']} frames, {wall:.2f} s wall (profiled)")
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:6.2f} s  {100 * seconds / total:5.1f}%  {group}")
    print("  top functions by self time:")
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:8]
    for (file, line, func), (_cc, calls, tottime, _ct, _callers) in ranked:
        where = func if file == "~" else f"{Path(file).name}:{line}({func})"
        print(f"    {tottime:6.2f} s  {calls:6d} calls  {where}")
    _alternatives(video, size)


def _alternatives(video: Path, size: tuple[int, int]) -> None:
    spec = ClipSpec(size=size)
    kept: list[int] = []
    for threads in (1, 2, None):
        t0 = time.perf_counter()
        clips = list(iter_clips(video, spec, threads=threads))
        label = "auto" if threads is None else str(threads)
        print(f"  PyAV, {label} decoder threads: {time.perf_counter() - t0:.2f} s ({len(clips)} clips)")
        kept = sorted({int(i) for c in clips for i in c.frame_indices})
    try:
        import decord
    except ImportError:
        print("  decord: not installed")
        return
    t0 = time.perf_counter()
    reader = decord.VideoReader(str(video), ctx=decord.cpu(0), width=size[0], height=size[1], num_threads=0)
    for start in range(0, len(kept), 64):  # batches, as a clip loader would ask; decord resizes every frame
        reader.get_batch(kept[start : start + 64]).asnumpy()
    print(f"  decord get_batch of the same {len(kept)} frames (own resize, different pixels): "
          f"{time.perf_counter() - t0:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--size", default="112x112")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    profile_ingest(args.video, (w, h))


if __name__ == "__main__":
    main()
