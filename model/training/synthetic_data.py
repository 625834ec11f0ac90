"""Labelled clip datasets cut from synthetic ward videos (``ingest.synthetic``).

For each seed a video is generated into a work directory, cut into clips with
``ingest.clips.iter_clips`` exactly as the worker would (same frame count, sampling rate and
size as the model's :class:`~model.weights.InputSpec`), and every clip is labelled from the
generator's ground truth.

Labelling rule (multi-hot): a clip is positive for a label when an event of that label overlaps
at least half of the clip, or at least half of the event (so a 1 s fall inside a 2 s clip still
counts). A clip that only grazes an event is negative: at inference such clips are ambiguous
either way, and training them as positives would teach the model to fire early.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from model.training.training_data import TrainingData
from model.weights import InputSpec

__all__ = ["DEFAULT_CLASS_NAMES", "clip_boxes", "clip_labels", "clip_spec_for", "concatenate", "make_synthetic_dataset"]

logger = logging.getLogger(__name__)

DEFAULT_CLASS_NAMES: tuple[str, ...] = ("bed_exit", "fall", "rhythmic_movement")
MIN_OVERLAP = 0.5  # fraction of the clip, or of the event, that must be covered


def clip_spec_for(spec: InputSpec, *, stride_seconds: float | None = None) -> Any:
    """The ``ingest.clips.ClipSpec`` that cuts clips matching ``spec`` (stride defaults to the
    clip length: non-overlapping clips, as the worker scores them)."""
    from ingest.clips import ClipSpec

    return ClipSpec(
        clip_seconds=spec.clip_seconds,
        stride_seconds=spec.clip_seconds if stride_seconds is None else stride_seconds,
        sample_fps=spec.sample_fps,
        size=tuple(spec.size),
    )


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def clip_labels(start: float, end: float, events: Sequence[Any], class_names: Sequence[str]) -> np.ndarray:
    """Multi-hot float32 ``[K]`` for the clip ``[start, end)`` seconds.

    ``events``: objects with ``label``, ``start``, ``end`` (seconds), e.g. ``SynthEvent``.
    Positive when overlap >= 50% of the clip or >= 50% of the event.
    """
    out = np.zeros(len(class_names), dtype=np.float32)
    index = {name: k for k, name in enumerate(class_names)}
    clip_len = max(end - start, 1e-9)
    for ev in events:
        k = index.get(ev.label)
        if k is None:
            continue
        ov = _overlap(start, end, ev.start, ev.end)
        ev_len = max(ev.end - ev.start, 1e-9)
        if ov > 0 and (ov >= MIN_OVERLAP * clip_len or ov >= MIN_OVERLAP * ev_len):
            out[k] = 1.0
    return out


def clip_boxes(
    start: float,
    end: float,
    labels: np.ndarray,
    events: Sequence[Any],
    class_names: Sequence[str],
    *,
    scale: tuple[float, float],
) -> np.ndarray:
    """Ground-truth region per class, float32 ``[K, 4]`` (x0, y0, x1, y1) in model-input pixels.

    The union of the event's per-frame boxes whose time falls inside the clip (falling back to
    all of the event's boxes if none does), scaled by ``scale`` = (sx, sy) from video pixels to
    input pixels. NaN rows for classes the clip is not labelled with.
    """
    out = np.full((len(class_names), 4), np.nan, dtype=np.float32)
    sx, sy = scale
    for k, name in enumerate(class_names):
        if labels[k] < 0.5:
            continue
        rows: list[tuple[float, float, float, float]] = []
        fallback: list[tuple[float, float, float, float]] = []
        for ev in events:
            if ev.label != name or _overlap(start, end, ev.start, ev.end) <= 0:
                continue
            for box in ev.boxes:
                _, t, x0, y0, x1, y1 = box
                fallback.append((x0, y0, x1, y1))
                if start <= t < end:
                    rows.append((x0, y0, x1, y1))
        chosen = rows or fallback
        if chosen:
            arr = np.asarray(chosen, dtype=np.float64)
            out[k] = (arr[:, 0].min() * sx, arr[:, 1].min() * sy, arr[:, 2].max() * sx, arr[:, 3].max() * sy)
    return out


def _video_dataset(
    result: Any,
    spec: InputSpec,
    class_names: Sequence[str],
    video_id: int,
    stride_seconds: float | None,
) -> TrainingData:
    """Cut one generated video into labelled clips (``groups`` = the video, ``extra`` = clip times)."""
    from ingest.clips import IngestReport, iter_clips

    config = result.config
    scale = (spec.size[0] / config.width, spec.size[1] / config.height)
    frames, labels, starts, ends, boxes = [], [], [], [], []
    report = IngestReport()
    for clip in iter_clips(result.video, clip_spec_for(spec, stride_seconds=stride_seconds), report=report):
        y = clip_labels(clip.start, clip.end, result.events, class_names)
        frames.append(clip.frames)
        labels.append(y)
        starts.append(clip.start)
        ends.append(clip.end)
        boxes.append(clip_boxes(clip.start, clip.end, y, result.events, class_names, scale=scale))
    for message in report.errors:
        logger.warning("video %s: %s", result.video, message)
    n = len(frames)
    t, (w, h) = spec.frames, spec.size
    return TrainingData(
        frames=np.stack(frames) if n else np.zeros((0, t, h, w, 3), dtype=np.uint8),
        labels=np.stack(labels) if n else np.zeros((0, len(class_names)), dtype=np.float32),
        class_names=list(class_names),
        multi_label=True,
        groups=np.full(n, video_id, dtype=np.int64),
        regions=[_regions(b) for b in boxes],
        source=f"synthetic ward video seed {video_id}",
        extra={"starts": np.asarray(starts, dtype=np.float64), "ends": np.asarray(ends, dtype=np.float64)},
    )


def _regions(boxes: np.ndarray) -> np.ndarray:
    """``[K, 4]`` boxes (NaN rows = absent class) as :class:`TrainingData` region rows ``[M, 5]``."""
    present = np.flatnonzero(~np.isnan(boxes).any(axis=1))
    return np.concatenate([present[:, None].astype(np.float32), boxes[present]], axis=1).astype(np.float32)


def concatenate(parts: Sequence[TrainingData]) -> TrainingData:
    """Join clip sets of the same classes and clip shape (regions and clip times kept)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    if any(p.class_names != first.class_names or p.frame_shape != first.frame_shape for p in parts):
        raise ValueError("clip sets differ in class names or clip shape")
    return TrainingData(
        frames=np.concatenate([np.asarray(p.frames) for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        class_names=list(first.class_names),
        multi_label=first.multi_label,
        groups=np.concatenate([p.groups for p in parts]),
        regions=[r for p in parts for r in (p.regions or [])],
        source="synthetic ward video",
        extra={key: np.concatenate([p.extra[key] for p in parts]) for key in ("starts", "ends")},
    )


def make_synthetic_dataset(
    work_dir: str | os.PathLike[str],
    spec: InputSpec,
    *,
    seeds: Sequence[int],
    seconds: float = 120.0,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    stride_seconds: float | None = None,
    synth_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[TrainingData, list[Any]]:
    """Generate one synthetic video per seed and return their labelled clips.

    ``seconds``: length of each video; ``stride_seconds``: clip stride (default = clip length;
    a smaller stride gives overlapping clips, i.e. more training samples from the same video);
    ``synth_options``: extra ``SynthConfig`` fields (e.g. ``events_per_minute``, ``width``).
    Videos and annotations go to ``work_dir/seed_<seed>/``. Returns the clips (``groups`` = seeds,
    ``extra["starts"]`` / ``["ends"]`` clip times in seconds, regions in input pixels) and the
    generator's ``SynthResult`` per seed (ground-truth events for event-level evaluation).
    """
    from ingest.synthetic import SynthConfig, generate

    root = Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    parts: list[TrainingData] = []
    results: list[Any] = []
    for seed in tqdm(list(seeds), desc="synthetic videos", unit="video", disable=not progress):
        config = SynthConfig(seconds=seconds, seed=int(seed), **dict(synth_options or {}))
        result = generate(root / f"seed_{seed}", config)
        part = _video_dataset(result, spec, class_names, int(seed), stride_seconds)
        logger.info(
            "synthetic video seed=%d: %d clips, positives per class %s", seed, len(part), part.positives().tolist()
        )
        parts.append(part)
        results.append(result)
    return concatenate(parts), results
