"""Data for the ATCON experiment: parse ``--data`` specs, load, split, cache synthetic clips.

Specs: ``imagefolder:PATH``, ``voc:PATH``, ``csv:PATH[,frames=8,fps=4,width=64,height=48,stride=S]``
and ``synthetic[:KEY=VAL,...]`` (keys in :data:`SYNTHETIC_DEFAULTS`; ``pretrain=P`` also makes
P event-free videos labelled with their distractors and caregiver visits, a different task used
to pretrain the backbone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from model.training.sources import annotated_videos, image_folder, synthetic_ward, voc
from model.training.training_data import TrainingData, load_npz, save_npz
from model.weights import InputSpec

__all__ = ["MIN_RECORDINGS", "SYNTHETIC_DEFAULTS", "Splits", "load_splits", "split_indices"]

logger = logging.getLogger(__name__)

SYNTHETIC_DEFAULTS: dict[str, float] = {
    "videos": 6,  # training videos (labelled subset + unlabelled pool)
    "val_videos": 2,
    "test_videos": 3,
    "seconds": 60,  # per video
    "frames": 8,  # frames per clip
    "fps": 4,  # sampling rate of the clip frames
    "width": 64,  # model input size
    "height": 48,
    "stride": 1.0,  # training clip stride in seconds (val/test clips do not overlap)
    "events_per_minute": 6,
    "distractors_per_minute": 2,
    "video_width": 160,  # generated video size
    "video_height": 120,
    "multi_label": 0,  # 0: softmax over none + 3 events (the paper's video setup); 1: sigmoid
    "seed": 0,  # first video seed
    "test_seed": -1,  # first test video seed (-1: seed + 2000); a pre-registered test uses fresh ones
    "pretrain": 0,  # event-free videos to pretrain the backbone on (distractors, visits); 0 = none
    "pretrain_epochs": 15,
}


# Train, validation and test each need a recording of their own.
MIN_RECORDINGS = 3


@dataclass
class Splits:
    """Train pool / validation / test, one label rule and class list.

    ``pretrain``: optional labelled data of a *different* task on the same domain (no class of
    the experiment), used to pretrain the backbone every model of the run starts from.
    """

    train: TrainingData
    val: TrainingData
    test: TrainingData
    spec: InputSpec
    description: dict[str, Any]
    pretrain: TrainingData | None = None


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _parse_options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"expected KEY=VAL, got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _stratified_split(data: TrainingData, test: float, val: float, seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays (train, val, test) stratified by the argmax class (multi-hot: first positive)."""
    rng = np.random.default_rng(seed)
    key = np.nan_to_num(data.labels, nan=0.0).argmax(axis=1)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in np.unique(key):
        items = rng.permutation(np.flatnonzero(key == c))
        n_test = int(round(test * items.size))
        n_val = int(round(val * items.size))
        parts[2].extend(items[:n_test])
        parts[1].extend(items[n_test : n_test + n_val])
        parts[0].extend(items[n_test + n_val :])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def _group_split(data: TrainingData, test: float, val: float, seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays (train, val, test) keeping every group (recording) in one split."""
    groups = np.unique(data.groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(groups)
    n_test = max(1, int(round(test * groups.size)))
    n_val = max(1, int(round(val * groups.size)))
    test_g, val_g = set(order[:n_test]), set(order[n_test : n_test + n_val])
    split = np.array([2 if g in test_g else 1 if g in val_g else 0 for g in data.groups])
    return tuple(np.flatnonzero(split == s) for s in range(3))


def split_indices(
    data: TrainingData, test: float, val: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(train, val, test, how)``: by group when items share groups, else stratified by class.

    Items sharing a group are clips of one recording: neighbouring (even overlapping) clips are
    near copies, so a per-clip split would put copies of test clips in training and inflate every
    test score. With fewer than :data:`MIN_RECORDINGS` recordings this refuses (ValueError) rather
    than silently falling back to a per-clip split; a split by time within a recording with a guard
    gap would be possible, but events are rare and unevenly spread in time, so its class balance
    would be left to chance, and a test set cut from the same few recordings still says little
    about new ones. Items that are each their own group (image folders, VOC) are split stratified.
    """
    n_groups = len(np.unique(data.groups))
    if n_groups == len(data):
        return (*_stratified_split(data, test, val, seed), "stratified by class")
    if n_groups < MIN_RECORDINGS:
        raise ValueError(
            f"{len(data)} clips come from {n_groups} recording(s); splitting them by recording needs at least "
            f"{MIN_RECORDINGS} (train, validation, test), and a per-clip split would leak neighbouring clips "
            "of one recording into the test set: add recordings"
        )
    return (*_group_split(data, test, val, seed), "by group")


def load_splits(
    data_spec: str,
    work_dir: Path,
    *,
    image_size: int | None = None,
    test_fraction: float = 0.3,
    val_fraction: float = 0.15,
) -> Splits:
    """Load ``data_spec`` and split it into train pool / validation / test.

    The split is fixed (it does not depend on the training seed), so every seed and every model
    is scored on the same held-out items. Synthetic data is split by video (its own videos per
    split); other data by :func:`split_indices`: by recording when items share recordings (a CSV
    of videos; fewer than three recordings is an error), else stratified by class.
    """
    kind, _, rest = data_spec.partition(":")
    size = (image_size, image_size) if image_size else None
    if kind == "synthetic":
        return _synthetic_splits(_parse_options(rest), work_dir)
    if kind == "imagefolder":
        data = image_folder(rest, size=size)
    elif kind == "voc":
        data = voc(rest, size=size or (224, 224))
    elif kind == "csv":
        path, _, opts_text = rest.partition(",")
        opts = _parse_options(opts_text)
        spec = InputSpec(
            frames=int(opts.get("frames", 8)),
            sample_fps=float(opts.get("fps", 4)),
            size=(int(opts.get("width", 64)), int(opts.get("height", 48))),
            multi_label=bool(int(opts.get("multi_label", 1))),
        )
        data = annotated_videos(path, spec, stride_seconds=float(opts["stride"]) if "stride" in opts else None)
    else:
        raise ValueError(f"unknown data kind {kind!r}: use imagefolder:PATH, voc:PATH, csv:PATH or synthetic[:K=V,...]")
    tr, va, te, how = split_indices(data, test_fraction, val_fraction, 0)
    if min(tr.size, va.size, te.size) == 0:
        raise ValueError(f"{data_spec}: too few items to split into train/val/test ({len(data)} items)")
    spec = data.input_spec()
    return Splits(
        train=data.subset(tr),
        val=data.subset(va),
        test=data.subset(te),
        spec=spec,
        description={
            "source": data.source,
            "classes": data.class_names,
            "multi_label": data.multi_label,
            "items": {"train": int(tr.size), "val": int(va.size), "test": int(te.size)},
            "split": how,
            "input": spec.to_dict(),
        },
    )


def _cached_synthetic(
    work_dir: Path,
    name: str,
    spec: InputSpec,
    *,
    seeds: list[int],
    seconds: float,
    stride: float | None,
    synth: dict[str, Any],
    targets: str = "events",
) -> TrainingData:
    """:func:`synthetic_ward` cached as ``.npz`` in ``work_dir`` (keyed by every setting).

    Videos are generated in a private temporary folder, so runs sharing a work folder never read
    each other's half-written videos; the cache itself is written atomically.
    """
    key = hashlib.sha256(
        json.dumps([name, seeds, seconds, stride, synth, spec.to_dict(), targets], sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = work_dir / "data" / f"{name}-{key}.npz"
    if cache.is_file():
        return load_npz(cache)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=work_dir))
    try:
        data = synthetic_ward(
            tmp, spec, seeds=seeds, seconds=seconds, stride_seconds=stride, synth_options=synth, targets=targets
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_npz(data, cache)
    return data


def _synthetic_splits(opts: dict[str, str], work_dir: Path) -> Splits:
    unknown = set(opts) - set(SYNTHETIC_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic options {sorted(unknown)}; known: {sorted(SYNTHETIC_DEFAULTS)}")
    o = {k: float(opts.get(k, v)) for k, v in SYNTHETIC_DEFAULTS.items()}
    spec = InputSpec(
        frames=int(o["frames"]),
        sample_fps=o["fps"],
        size=(int(o["width"]), int(o["height"])),
        multi_label=bool(int(o["multi_label"])),
    )
    synth = {
        "events_per_minute": o["events_per_minute"],
        "distractors_per_minute": o["distractors_per_minute"],
        "width": int(o["video_width"]),
        "height": int(o["video_height"]),
    }
    first = int(o["seed"])
    test_first = int(o["test_seed"]) if o["test_seed"] >= 0 else first + 2000
    n_train, n_val, n_test = int(o["videos"]), int(o["val_videos"]), int(o["test_videos"])
    seeds = {
        "train": list(range(first, first + n_train)),
        "val": list(range(first + 1000, first + 1000 + n_val)),
        "test": list(range(test_first, test_first + n_test)),
    }

    def part(name: str, stride: float | None) -> TrainingData:
        return _cached_synthetic(
            work_dir, name, spec, seeds=seeds[name], seconds=o["seconds"], stride=stride, synth=synth
        )

    train_data = part("train", o["stride"])
    val_data, test_data = part("val", None), part("test", None)
    pretrain = None
    if int(o["pretrain"]) > 0:
        # Event-free videos (disjoint seeds) labelled with the scene's other activity.
        seeds["pretrain"] = list(range(first + 3000, first + 3000 + int(o["pretrain"])))
        pretrain = _cached_synthetic(
            work_dir,
            "pretrain",
            replace(spec, multi_label=True),
            seeds=seeds["pretrain"],
            seconds=o["seconds"],
            stride=o["stride"],
            synth={**synth, "events_per_minute": 0.0, "distractors_per_minute": 6.0},
            targets="activity",
        )
    return Splits(
        pretrain=pretrain,
        train=train_data,
        val=val_data,
        test=test_data,
        spec=spec,
        description={
            "source": "synthetic ward video",
            "options": o,
            "video_seeds": seeds,
            "classes": train_data.class_names,
            "multi_label": spec.multi_label,
            "items": {"train": len(train_data), "val": len(val_data), "test": len(test_data)},
            "positives": {
                "train": train_data.positives().tolist(),
                "val": val_data.positives().tolist(),
                "test": test_data.positives().tolist(),
            },
            "split": "by video",
            "input": spec.to_dict(),
        },
    )
