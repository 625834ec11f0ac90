"""Clips of synthetic ward video (``ingest.synthetic``) with per-frame ground-truth boxes.

Built with :mod:`model.training.synthetic_data`; :func:`synthetic_ward` labels clips with the
generator's events (or, ``targets="activity"``, with the scene's non-event activity).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.training.training_data import BACKGROUND, TrainingData
from model.weights import InputSpec

__all__ = ["ACTIVITY_LABELS", "synthetic_ward"]


def synthetic_ward(
    work_dir: str | os.PathLike[str],
    spec: InputSpec,
    *,
    seeds: Sequence[int],
    seconds: float = 60.0,
    stride_seconds: float | None = None,
    synth_options: Mapping[str, Any] | None = None,
    background: bool = True,
    targets: str = "events",
) -> TrainingData:
    """Clips of synthetic ward videos (one per seed; group = seed) with ground-truth regions.

    ``targets="activity"`` labels the clips instead with the *non-event* activity of the scene
    (multi-label: the distractor kinds and caregiver visits, no regions), a different task on
    the same domain, used to pretrain a backbone that never saw an event label (the stand-in for
    the paper's Kinetics / ImageNet pretraining, which we cannot download).

    Labels from the generator's events (:func:`model.training.synthetic_data.clip_labels`).
    ``spec.multi_label`` False gives one class per clip: the event, or ``"none"`` (the first
    class, when ``background``) for quiet clips, like the paper's softmax video model. Regions:
    every per-frame box of a labelled event whose time falls inside the clip (the union of
    these rectangles is the event's region in the clip), in input pixels.
    """
    from model.training.synthetic_data import DEFAULT_CLASS_NAMES, make_synthetic_dataset

    events = list(DEFAULT_CLASS_NAMES)
    ds, results = make_synthetic_dataset(
        work_dir,
        spec,
        seeds=seeds,
        seconds=seconds,
        class_names=events,
        stride_seconds=stride_seconds,
        synth_options=synth_options,
    )
    by_seed = {int(r.config.seed): r for r in results}
    if targets == "activity":
        return _activity_data(ds, by_seed)
    if targets != "events":
        raise ValueError(f"targets must be 'events' or 'activity', got {targets!r}")
    starts, ends = ds.extra["starts"], ds.extra["ends"]
    regions = []
    for i in range(len(ds)):
        result = by_seed[int(ds.groups[i])]
        sx, sy = spec.size[0] / result.config.width, spec.size[1] / result.config.height
        start, end = float(starts[i]), float(ends[i])
        rows = []
        for ev in result.events:
            k = events.index(ev.label) if ev.label in events else -1
            if k < 0 or ds.labels[i, k] < 0.5:
                continue
            inside = [b for b in ev.boxes if start <= b[1] < end] or list(ev.boxes)
            rows.extend((k, b[2] * sx, b[3] * sy, b[4] * sx, b[5] * sy) for b in inside)
        regions.append(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
    labels = ds.labels.astype(np.float32)
    names = events
    if not spec.multi_label:
        if not background:
            raise ValueError("single-label synthetic data needs the background class")
        names = [BACKGROUND, *events]
        single = np.zeros((len(ds), len(names)), dtype=np.float32)
        quiet = labels.sum(axis=1) < 0.5
        single[quiet, 0] = 1.0
        single[~quiet, 1 + labels[~quiet].argmax(axis=1)] = 1.0
        labels = single
        regions = [np.concatenate([r[:, :1] + 1, r[:, 1:]], axis=1) if r.size else r for r in regions]
    return TrainingData(
        frames=ds.frames,
        labels=labels,
        class_names=names,
        multi_label=spec.multi_label,
        groups=ds.groups,
        regions=regions,
        source="synthetic",
        extra={"starts": starts, "ends": ends},
    )


ACTIVITY_LABELS: tuple[str, ...] = ("lighting_change", "sensor_noise", "passer_by", "caregiver_visit")


def _activity_data(ds: TrainingData, by_seed: Mapping[int, Any]) -> TrainingData:
    """Multi-label clips over :data:`ACTIVITY_LABELS` (distractors and visits), no regions."""
    from model.training.synthetic_data import clip_labels

    names = list(ACTIVITY_LABELS)
    labels = (
        np.stack(
            [
                clip_labels(
                    float(ds.extra["starts"][i]),
                    float(ds.extra["ends"][i]),
                    list(by_seed[int(ds.groups[i])].distractors) + list(by_seed[int(ds.groups[i])].background),
                    names,
                )
                for i in range(len(ds))
            ]
        )
        if len(ds)
        else np.zeros((0, len(names)), dtype=np.float32)
    )
    return TrainingData(
        frames=ds.frames,
        labels=labels,
        class_names=names,
        multi_label=True,
        groups=ds.groups,
        source="synthetic activity",
    )
