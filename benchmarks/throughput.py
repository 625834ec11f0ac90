"""Benchmark: clips scored per second on CPU, and the scorer's efficiency against the bare model forward.

All figures come from one run, so the machine's load affects them alike:

1. **Efficiency** (one process, one recording), for the shipped demo model the pipeline uses and, as a model
   whose forward dominates decoding the way a production network's does, ``r3d_18`` with random weights at the
   same input (``--arch``): the same clips scored three ways --
   *bare forward*: clips decoded into memory first (not timed), then only the model's forward in batches of
   ``--batch`` under ``torch.inference_mode``; *scorer*: ``ObservedScorer.score(iter_clips(...))`` as the
   pipeline runs it (decode, tensor preparation and forward, the decode thread feeding the model through its
   bounded queue); *scorer, no decode thread* (``prefetch_batches=0``): decode and forward in turn. Printed
   as clips/s and as ratios to the bare forward (target >= 0.90 for the scorer); each is the best of
   ``--rounds`` interleaved repetitions, because the machine's other load comes and goes.
2. **Embedded pipeline** with 1 and 2 worker processes: each process is a real worker context
   (``server.bootstrap.make_worker_context``) running ``server.worker.scoring.process_recording`` on its own
   synthetic recording against one SQLite database (decode, score, commit every ``commit_every`` clips,
   event detection, explanation media and review clips of the events found). Clips/s = clips committed by
   all processes / wall time from the common start (a barrier after model loading) to the last finish; the
   scoring stage (decode, score, commit, without event media) is also timed on its own.

Usage: ``.venv/bin/python benchmarks/throughput.py [--seconds 60] [--batch 8] [--out DIR]``. The recordings
come from the project's synthetic ward generator (``ingest.synthetic``), one seed per process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.clips import iter_clips  # noqa: E402
from ingest.synthetic import SynthConfig, generate  # noqa: E402
from model.accel import InferenceOptions  # noqa: E402
from model.inference import frames_to_tensor  # noqa: E402
from model.weights import LoadedModel, load_checkpoint  # noqa: E402
from server.settings import DEFAULT_MODEL_PATH, Settings  # noqa: E402


def _random_model(arch: str, like: LoadedModel) -> LoadedModel:
    """``arch`` with random weights (throughput does not depend on them) and ``like``'s input and classes."""
    from model.nets import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes=like.num_classes).eval()
    return LoadedModel(model=model, arch=arch, class_names=list(like.class_names), input_spec=like.input_spec)


def _settings(data_dir: Path, batch: int) -> Settings:
    return Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'wardwatch.db'}", device="cpu",
                    score_batch_size=batch, environment="development")


def _clip_spec(loaded: LoadedModel, settings: Settings):  # type: ignore[no-untyped-def]
    from server.pipeline import clip_spec_for

    return clip_spec_for(loaded, settings)


def _bare_forward(loaded: LoadedModel, video: Path, settings: Settings, batch: int) -> tuple[int, float]:
    spec = _clip_spec(loaded, settings)
    frames = [clip.frames for clip in iter_clips(video, spec)]  # decoded up front: not timed
    tensors = [frames_to_tensor(np.stack(frames[i:i + batch]), loaded.input_spec)
               for i in range(0, len(frames), batch)]  # prepared up front too: the forward alone is timed
    model = loaded.model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for x in tensors:
            torch.sigmoid(model(x).float()).numpy()
    return len(frames), time.perf_counter() - started


def _scorer(loaded: LoadedModel, video: Path, settings: Settings, batch: int, prefetch: int) -> tuple[int, float]:
    from server.observability.scoring import ObservedScorer

    scorer = ObservedScorer(loaded, batch_size=batch, options=InferenceOptions(prefetch_batches=prefetch))
    started = time.perf_counter()
    n = sum(1 for _ in scorer.score(iter_clips(video, _clip_spec(loaded, settings))))
    return n, time.perf_counter() - started


def _time_scoring_stage(pipeline) -> list[float]:  # type: ignore[no-untyped-def]
    """Time the pipeline's scoring stage (decode, score, commit: ``_score_clips``) apart from event media.

    A measuring wrapper around the real function, looked up by ``_process`` at call time; seconds are appended
    to the returned list.
    """
    real, seconds = pipeline._score_clips, []

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    pipeline._score_clips = timed
    return seconds


def _worker(data_dir: str, batch: int, recording_id: int, job_id: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    from server.bootstrap import make_worker_context
    from server.db.session import session_scope
    from server.db.tables import Recording
    from server.services.models import get_active_model
    from server.worker import scoring as pipeline

    settings = _settings(Path(data_dir), batch).model_copy(update={"auto_migrate": False})
    ctx = make_worker_context(settings)
    with session_scope(ctx.session_factory) as session:
        version = get_active_model(session=session)
        assert version is not None
        ctx.models.get(version)  # loaded before the clock starts
    stage = _time_scoring_stage(pipeline)
    barrier.wait()
    started = time.perf_counter()
    pipeline.process_recording(ctx, recording_id, job_id)
    finished = time.perf_counter()
    with session_scope(ctx.session_factory) as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        status = getattr(recording.status, "value", str(recording.status))
        results.put((recording_id, status, int(recording.clip_count or 0), started, finished, recording.error,
                     sum(stage)))


def _pipeline(out: Path, videos: list[Path], processes: int, batch: int) -> tuple[int, float, float, list[str]]:
    from server.bootstrap import ensure_active_model, open_database
    from server.services.intake import IntakeOptions, file_sha256, register_recording

    data_dir = out / f"data_{processes}p"
    settings = _settings(data_dir, batch)
    _engine, factory = open_database(settings)  # migrated once here; the workers only connect
    ensure_active_model(settings, factory)
    jobs = []
    for video in videos[:processes]:
        recording, job_id = register_recording(
            settings=settings, factory=factory, source=video.name, file=video, sha256=file_sha256(video),
            size=video.stat().st_size, options=IntakeOptions(allow_duplicate=True), move_into_data_dir=False)
        jobs.append((recording.id, job_id))
    spawn = mp.get_context("spawn")
    barrier, results = spawn.Barrier(processes), spawn.Queue()
    procs = [spawn.Process(target=_worker, args=(str(data_dir), batch, rid, jid, barrier, results))
             for rid, jid in jobs]
    for proc in procs:
        proc.start()
    rows = [results.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
    notes = [f"recording {rid}: {status}, {clips} clips, {end - start:.1f} s, of which scoring stage {stage:.1f} s"
             + (f" ({err})" if err else "") for rid, status, clips, start, end, err, stage in rows]
    wall = max(r[4] for r in rows) - min(r[3] for r in rows)
    return sum(r[2] for r in rows), wall, max(r[6] for r in rows), notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each synthetic recording")
    parser.add_argument("--batch", type=int, default=8, help="clips per forward pass (score_batch_size)")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--arch", type=lambda text: text.split(","), default=["demo", "r3d_18"],
                        help="models for the efficiency part: demo (the shipped checkpoint the pipeline uses) and "
                             "architectures from model.nets with random weights at the demo's input spec")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of part 1 (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wardwatch-throughput-") as tmp:
        out = (args.out or Path(tmp)).resolve()  # recordings are registered by absolute path
        out.mkdir(parents=True, exist_ok=True)
        videos = []
        for seed in (0, 1):
            folder = out / f"ward_{seed}"
            videos.append(folder / "ward.mp4" if (folder / "ward.mp4").exists()
                          else generate(folder, SynthConfig(seconds=args.seconds, seed=seed)).video)
        demo = load_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
        settings = _settings(out / "efficiency", args.batch)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, batch {args.batch}, "
              f"{args.seconds:g} s synthetic recordings", flush=True)
        demo_rate = 0.0
        for arch in args.arch:
            loaded = demo if arch == "demo" else _random_model(arch, demo)
            _bare_forward(loaded, videos[0], settings, args.batch)  # warm-up (allocator, kernels)
            times: dict[str, list[float]] = {"bare": [], "scored": [], "serial": []}
            counts: set[int] = set()
            for _ in range(args.rounds):  # interleaved, best of each: other load on the machine hits all alike
                for key, run in (("bare", lambda m=loaded: _bare_forward(m, videos[0], settings, args.batch)),
                                 ("scored", lambda m=loaded: _scorer(m, videos[0], settings, args.batch, 2)),
                                 ("serial", lambda m=loaded: _scorer(m, videos[0], settings, args.batch, 0))):
                    count, seconds = run()
                    counts.add(count)
                    times[key].append(seconds)
            assert len(counts) == 1, counts
            n = counts.pop()
            bare, scored, serial = (min(times[key]) for key in ("bare", "scored", "serial"))
            demo_rate = n / bare if arch == "demo" else demo_rate
            print(f"\n1. efficiency, {arch} ({loaded.arch}), {n} clips of one recording (one process, best of "
                  f"{args.rounds} interleaved rounds)")
            print(f"   bare forward                 {n / bare:8.1f} clips/s")
            print(f"   scorer (decode thread)       {n / scored:8.1f} clips/s   efficiency {bare / scored:5.2f}")
            print(f"   scorer (no decode thread)    {n / serial:8.1f} clips/s   efficiency {bare / serial:5.2f}",
                  flush=True)
        print("\n2. embedded pipeline (process_recording, one SQLite database)", flush=True)
        per_process: dict[int, float] = {}
        for processes in (1, 2):
            clips, wall, stage, notes = _pipeline(out, videos, processes, args.batch)
            per_process[processes] = clips / wall
            ratio = f"   (pipeline / bare demo forward {clips / wall / demo_rate:.2f})" if demo_rate else ""
            print(f"   {processes} process(es): {clips} clips in {wall:.1f} s = {clips / wall:.1f} clips/s{ratio}")
            print(f"      scoring stage alone (slowest process): {clips / stage:.1f} clips/s"
                  + (f" = {clips / stage / demo_rate:.2f} of the bare demo forward" if demo_rate else ""))
            for note in notes:
                print(f"      {note}")
        print(f"   scaling 2 processes / 1 process: {per_process[2] / per_process[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
