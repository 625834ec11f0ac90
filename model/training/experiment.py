"""The ATCON experiment: supervised baseline vs ATCON fine-tuning on a small labelled set.

``wardwatch experiment atcon --data ... --arch ... --images-per-class N [N ...] --seeds K --out
results.json`` (the server's CLI calls :func:`run_cli`). For every N and seed:

1. the training split is divided into a small labelled set (``images_per_class`` = N, drawn with
   :func:`~model.training.trainer.select_labelled`, the seed's draw) and the unlabelled pool
   (everything else, labels dropped);
2. the **baseline** is trained on the labelled set only (supervised mode, best epoch by
   validation macro-F1);
3. **ATCON** fine-tunes a copy of the baseline's best weights (alternating mode by default; the
   starting weights compete for "best", so selection never prefers a worse validation score);
4. optionally a **control** fine-tunes the baseline with the same labelled steps but no
   unlabelled ones (``--control``): it separates ATCON's effect from that of simply training the
   baseline longer;
5. all models are scored on the same held-out test split: macro-F1 and mAP with bootstrap CIs,
   the paired ATCON - baseline difference, and where the data has regions the localisation
   mIoU, pointing game and Average Drop / Increase in Confidence.

Outputs: the JSON at ``--out`` (config, data, per-N per-seed results and summaries), a Markdown
table beside it (same stem, ``.md``) and, with several N, a PNG plot of macro-F1 against N.

Data specs: ``imagefolder:PATH``, ``voc:PATH``, ``csv:PATH[,frames=8,fps=4,width=64,height=48]``
(videos + annotation CSV; ``stride=`` seconds between clips) and ``synthetic[:KEY=VAL,...]``
(synthetic ward video; keys in :data:`SYNTHETIC_DEFAULTS`; ``pretrain=P`` first pretrains the
backbone on P event-free videos labelled with their distractors and caregiver visits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.nets import ARCHITECTURES, build_model, is_video_arch
from model.training.atcon import FINE_METHODS, RESOLUTION_MATCHES, SIMILARITIES, ATCONConfig, reflect_padding
from model.training.datasets import (
    TrainingData,
    annotated_videos,
    image_folder,
    load_npz,
    save_npz,
    synthetic_ward,
    voc,
)
from model.training.evaluation import (
    average_drop_increase,
    bootstrap_macro_f1,
    bootstrap_mean,
    class_targets,
    grad_cam_maps,
    localisation,
    mean_average_precision,
    paired_bootstrap_macro_f1,
    paired_bootstrap_mean,
    per_class_f1,
    predict_probs,
)
from model.training.trainer import MODES, FinetuneConfig, select_labelled, train
from model.weights import InputSpec

__all__ = [
    "SYNTHETIC_DEFAULTS",
    "ExperimentConfig",
    "Splits",
    "build_parser",
    "load_splits",
    "run_cli",
    "run_experiment",
]

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
    "pretrain": 0,  # event-free videos to pretrain the backbone on (distractors, visits); 0 = none
    "pretrain_epochs": 15,
}


@dataclass
class ExperimentConfig:
    """Everything a run depends on (stored in the JSON)."""

    data: str
    arch: str = "tiny2d"
    images_per_class: list[int] = field(default_factory=lambda: [2])
    seeds: int = 3
    out: str = "results.json"
    epochs: int = 30
    lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    mode: str = "alternating"
    alpha: float = 8.0
    atcon_weight: float = 0.1
    batch_size: int = 16
    unlabelled_batch_size: int = 32
    grad_clip: float | None = 5.0
    atcon_grad_clip: float | None = None
    weight_decay: float = 0.0
    resolution_match: str = "mask"
    similarity: str = "pearson"
    fine_method: str = "guided_backprop"
    mask_intensity: float = 8.0
    detach_mask: bool = False
    reflect_padding: bool = False
    fully_balanced: bool = False
    control: bool = False
    image_size: int | None = None
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    bootstrap: int = 1000
    localisation: bool = True
    device: str = "cpu"
    work_dir: str | None = None
    cache_baselines: bool = True
    progress: bool | None = None
    pretrained: str | None = None
    freeze_bn: str = "finetune"


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


def load_splits(config: ExperimentConfig, work_dir: Path) -> Splits:
    """Load ``config.data`` and split it (the split is fixed: it does not depend on the seed)."""
    kind, _, rest = config.data.partition(":")
    size = (config.image_size, config.image_size) if config.image_size else None
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
    grouped = len(np.unique(data.groups)) < len(data) and len(np.unique(data.groups)) >= 3
    split = _group_split if grouped else _stratified_split
    tr, va, te = split(data, config.test_fraction, config.val_fraction, 0)
    if min(tr.size, va.size, te.size) == 0:
        raise ValueError(f"{config.data}: too few items to split into train/val/test ({len(data)} items)")
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
            "split": "by group" if grouped else "stratified by class",
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
    import shutil
    import tempfile

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
    n_train, n_val, n_test = int(o["videos"]), int(o["val_videos"]), int(o["test_videos"])
    seeds = {
        "train": list(range(first, first + n_train)),
        "val": list(range(first + 1000, first + 1000 + n_val)),
        "test": list(range(first + 2000, first + 2000 + n_test)),
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


# --------------------------------------------------------------------------------------------
# One seed
# --------------------------------------------------------------------------------------------


def _atcon_config(config: ExperimentConfig) -> ATCONConfig:
    return ATCONConfig(
        resolution_match=config.resolution_match,
        similarity=config.similarity,
        fine_method=config.fine_method,
        mask_intensity=config.mask_intensity,
        detach_mask=config.detach_mask,
    )


def _train_config(
    config: ExperimentConfig, *, mode: str, seed: int, epochs: int, lr: float, finetuning: bool = True
) -> FinetuneConfig:
    return FinetuneConfig(
        mode=mode,
        epochs=epochs,
        lr=lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        unlabelled_batch_size=config.unlabelled_batch_size,
        alpha=config.alpha,
        atcon_weight=config.atcon_weight,
        grad_clip=config.grad_clip,
        atcon_grad_clip=config.atcon_grad_clip,
        atcon=_atcon_config(config),
        seed=seed,
        device=config.device,
        progress=config.progress,
        select_initial=mode != "supervised",
        freeze_batchnorm=config.freeze_bn == "all" or (config.freeze_bn == "finetune" and finetuning),
    )


def _evaluate(
    model: nn.Module, splits: Splits, config: ExperimentConfig, *, seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Test metrics of ``model`` and the per-item arrays needed for paired comparisons."""
    test, spec = splits.test, splits.spec
    probs = predict_probs(model, test.frames, spec)
    targets = class_targets(test.labels, multi_label=test.multi_label)
    f1, low, high = bootstrap_macro_f1(probs, targets, multi_label=test.multi_label, runs=config.bootstrap, seed=seed)
    per = per_class_f1(probs, targets, multi_label=test.multi_label)
    metrics: dict[str, Any] = {
        "macro_f1": f1,
        "macro_f1_ci": [low, high],
        "map": mean_average_precision(probs, targets),
        "per_class_f1": {n: (None if math.isnan(v) else float(v)) for n, v in zip(test.class_names, per, strict=True)},
    }
    arrays: dict[str, np.ndarray] = {"probs": probs}
    if config.localisation and test.regions is not None:
        loc = localisation(model, test.frames, test.labels, test.regions, spec, probs=probs)
        metrics.update(loc.summary())
        miou, miou_low, miou_high = bootstrap_mean(loc.iou, runs=config.bootstrap, seed=seed)
        metrics["miou_ci"] = [miou_low, miou_high]
        arrays["iou"], arrays["pointing"] = loc.iou, loc.pointing
        metrics.update(_drop_increase(model, test, spec, loc.predicted))
    return metrics, arrays


def _drop_increase(model: nn.Module, test: TrainingData, spec: InputSpec, predicted: np.ndarray) -> dict[str, float]:
    """Average Drop / Increase in Confidence (%) of Grad-CAM at 100/50/15 % kept, on the test set."""
    from model.inference import frames_to_tensor

    maps = torch.from_numpy(grad_cam_maps(model, test.frames, spec, predicted))
    out: dict[str, float] = {}
    for keep in (1.0, 0.5, 0.15):
        drops, incs, sizes = [], [], []
        for i in range(0, len(test), 64):
            idx = np.arange(i, min(i + 64, len(test)))
            x = frames_to_tensor(test.batch(idx), spec)
            m = maps[idx][:, None].expand(-1, x.shape[2], -1, -1)  # same 2-D map on every frame
            d, c = average_drop_increase(
                model, x, m, torch.from_numpy(predicted[idx]), multi_label=spec.multi_label, keep_fraction=keep
            )
            drops.append(d * idx.size)
            incs.append(c * idx.size)
            sizes.append(idx.size)
        tag = int(round(keep * 100))
        out[f"average_drop_{tag}"] = float(sum(drops) / max(sum(sizes), 1))
        out[f"increase_in_confidence_{tag}"] = float(sum(incs) / max(sum(sizes), 1))
    return out


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _baseline_key(config: ExperimentConfig, n: int, seed: int, pretrain: Any = None) -> str:
    fields = {
        "pretrain": pretrain,
        "data": config.data,
        "arch": config.arch,
        "n": n,
        "seed": seed,
        "epochs": config.epochs,
        "lr": config.lr,
        "alpha": config.alpha,
        "batch": config.batch_size,
        "clip": config.grad_clip,
        "wd": config.weight_decay,
        "reflect": config.reflect_padding,
        "balanced": config.fully_balanced,
        "size": config.image_size,
        "split": [config.test_fraction, config.val_fraction],
        "version": 1,
    }
    if config.freeze_bn == "all":  # only then does it change the baseline (older keys stay valid)
        fields["freeze_bn"] = "all"
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _new_model(
    config: ExperimentConfig, num_classes: int, seed: int, backbone: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """A fresh model for ``seed``; with ``backbone`` every weight but the classifier is copied in."""
    torch.manual_seed(seed)
    model = build_model(config.arch, num_classes=num_classes)
    if backbone is not None:
        own = model.state_dict()
        usable = {k: v for k, v in backbone.items() if k in own and own[k].shape == v.shape and not k.startswith("fc.")}
        model.load_state_dict(usable, strict=False)
    if config.reflect_padding:
        reflect_padding(model)
    return model


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a Wardwatch checkpoint or a plain ``torch.save``-d state dict (e.g.
    torchvision ImageNet / Kinetics weights kept on disk), loaded with ``weights_only=True``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} holds no state dict")
    return payload


def pretrained_backbone(config: ExperimentConfig, splits: Splits, work_dir: Path) -> dict[str, torch.Tensor] | None:
    """Backbone weights: ``config.pretrained`` (a file), else pretrained on ``splits.pretrain``
    (cached in ``work_dir``), else None.

    Supervised multi-label training on the other task; the classifier is dropped when the
    weights are used. Validation: a held-out fifth of the pretraining videos.
    """
    if config.pretrained:
        return _load_weights(Path(config.pretrained))
    data = splits.pretrain
    if data is None:
        return None
    epochs = int(splits.description.get("options", {}).get("pretrain_epochs", 15))
    key = hashlib.sha256(
        json.dumps(
            [
                config.arch,
                splits.description.get("video_seeds", {}).get("pretrain"),
                epochs,
                config.lr,
                config.reflect_padding,
                splits.spec.to_dict(),
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = work_dir / "pretrained" / f"{key}.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    groups = np.unique(data.groups)
    val_groups = groups[: max(1, groups.size // 5)]
    is_val = np.isin(data.groups, val_groups)
    spec = replace(splits.spec, multi_label=True)
    model = _new_model(config, data.num_classes, 12345)
    result = train(
        model,
        labelled=data.subset(np.flatnonzero(~is_val)),
        unlabelled=None,
        validation=data.subset(np.flatnonzero(is_val)),
        spec=spec,
        config=FinetuneConfig(
            mode="supervised",
            epochs=epochs,
            lr=config.lr,
            alpha=1.0,
            batch_size=16,
            seed=0,
            device=config.device,
            progress=config.progress,
            select_initial=False,
        ),
    )
    logger.info("pretrained backbone on %s: val macro-F1 %.3f", data.class_names, result.best_val_macro_f1 or 0.0)
    state = _state(model)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, cache)
    return state


def run_seed(
    config: ExperimentConfig,
    splits: Splits,
    n: int,
    seed: int,
    work_dir: Path,
    backbone: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Baseline, ATCON (and control) for one N and seed; returns the JSON row and item arrays."""
    rng = np.random.default_rng(seed)
    pool = splits.train
    lab = select_labelled(pool.labels, n, rng, fully_balanced=config.fully_balanced, multi_label=pool.multi_label)
    rest = np.setdiff1d(np.arange(len(pool)), lab)
    labelled, unlabelled = pool.subset(lab), pool.subset(rest, unlabel=True)
    k = pool.num_classes
    row: dict[str, Any] = {
        "seed": seed,
        "labelled": int(lab.size),
        "unlabelled": int(rest.size),
        "labelled_positives": labelled.positives().tolist(),
    }
    # 1. baseline (cached: it does not depend on the ATCON settings being explored)
    t0 = time.perf_counter()
    pretrain_id: Any = splits.description.get("video_seeds", {}).get("pretrain")
    if config.pretrained:
        pretrain_id = [pretrain_id, config.pretrained]
    key = _baseline_key(config, n, seed, pretrain_id)
    cache = work_dir / "baselines" / f"{key}.pt"
    model = _new_model(config, k, seed, backbone)
    if config.cache_baselines and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        model.load_state_dict(saved["model"])
        base_info = saved["info"]
        logger.info("N=%d seed=%d: baseline from cache %s", n, seed, cache)
    else:
        result = train(
            model,
            labelled=labelled,
            unlabelled=None,
            validation=splits.val,
            spec=splits.spec,
            config=_train_config(
                config, mode="supervised", seed=seed, epochs=config.epochs, lr=config.lr, finetuning=False
            ),
        )
        base_info = {
            "best_epoch": result.best_epoch,
            "val_macro_f1": result.best_val_macro_f1,
            "seconds": result.seconds,
        }
        if config.cache_baselines:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save({"model": _state(model), "info": base_info}, tmp)
            os.replace(tmp, cache)
    base_state = _state(model)
    base_metrics, base_arrays = _evaluate(model, splits, config, seed=seed)
    row["baseline"] = {**base_info, **base_metrics}
    row["baseline"]["train_seconds"] = time.perf_counter() - t0

    # 2. ATCON fine-tuning from the baseline's best weights
    t0 = time.perf_counter()
    model = _new_model(config, k, seed)
    model.load_state_dict(base_state)
    ft = train(
        model,
        labelled=labelled,
        unlabelled=unlabelled,
        validation=splits.val,
        spec=splits.spec,
        config=_train_config(config, mode=config.mode, seed=seed, epochs=config.finetune_epochs, lr=config.finetune_lr),
    )
    at_metrics, at_arrays = _evaluate(model, splits, config, seed=seed)
    row["atcon"] = {
        "best_epoch": ft.best_epoch,
        "val_macro_f1": ft.best_val_macro_f1,
        "start_val_macro_f1": ft.initial_val_macro_f1,
        "seconds": ft.seconds,
        **at_metrics,
        "history": [_history_row(h) for h in ft.history],
    }
    arrays = {"baseline": base_arrays, "atcon": at_arrays}

    # 3. control: same labelled steps, no unlabelled ones
    if config.control:
        model = _new_model(config, k, seed)
        model.load_state_dict(base_state)
        cfg = _train_config(config, mode="supervised", seed=seed, epochs=config.finetune_epochs, lr=config.finetune_lr)
        cfg.select_initial = True
        ctl = train(model, labelled=labelled, unlabelled=None, validation=splits.val, spec=splits.spec, config=cfg)
        ctl_metrics, ctl_arrays = _evaluate(model, splits, config, seed=seed)
        row["control"] = {"best_epoch": ctl.best_epoch, "val_macro_f1": ctl.best_val_macro_f1, **ctl_metrics}
        arrays["control"] = ctl_arrays

    targets = class_targets(splits.test.labels, multi_label=splits.test.multi_label)
    row["paired_f1"] = paired_bootstrap_macro_f1(
        base_arrays["probs"],
        at_arrays["probs"],
        targets,
        multi_label=splits.test.multi_label,
        runs=config.bootstrap,
        seed=seed,
    )
    if "iou" in base_arrays:
        row["paired_miou"] = paired_bootstrap_mean(
            base_arrays["iou"], at_arrays["iou"], runs=config.bootstrap, seed=seed
        )
        row["paired_pointing"] = paired_bootstrap_mean(
            base_arrays["pointing"], at_arrays["pointing"], runs=config.bootstrap, seed=seed
        )
    row["_arrays"] = arrays
    logger.info(
        "N=%d seed=%d: baseline F1 %.4f, ATCON F1 %.4f (best epoch %d)%s",
        n,
        seed,
        row["baseline"]["macro_f1"],
        row["atcon"]["macro_f1"],
        ft.best_epoch,
        f", control F1 {row['control']['macro_f1']:.4f}" if "control" in row else "",
    )
    return row


def _history_row(h: dict[str, Any]) -> dict[str, Any]:
    keep = ("epoch", "loss", "sup_loss", "atcon_loss", "agreement", "atcon_top_class_share", "val_macro_f1")
    out = {k: h[k] for k in keep if k in h}
    for k in ("grad_norm_supervised", "grad_norm_unsupervised", "grad_norm_combined"):
        if k in h:
            out[k] = h[k]
    return out


# --------------------------------------------------------------------------------------------
# Aggregation and outputs
# --------------------------------------------------------------------------------------------


def _summarise(rows: list[dict[str, Any]], splits: Splits, config: ExperimentConfig) -> dict[str, Any]:
    test = splits.test
    targets = class_targets(test.labels, multi_label=test.multi_label)

    def vals(model: str, key: str) -> list[float]:
        return [float(r[model][key]) for r in rows if model in r and r[model].get(key) is not None]

    summary: dict[str, Any] = {}
    for model in ("baseline", "atcon", "control"):
        f1 = vals(model, "macro_f1")
        if not f1:
            continue
        entry = {
            "macro_f1_mean": float(np.mean(f1)),
            "macro_f1_std": float(np.std(f1)),
            "map_mean": float(np.mean(vals(model, "map"))),
        }
        for key in ("miou", "pointing_game", "average_drop_100", "increase_in_confidence_100"):
            v = [x for x in vals(model, key) if not math.isnan(x)]
            if v:
                entry[f"{key}_mean"] = float(np.mean(v))
        summary[model] = entry
    arrays = [r["_arrays"] for r in rows]
    summary["paired_f1"] = paired_bootstrap_macro_f1(
        [a["baseline"]["probs"] for a in arrays],
        [a["atcon"]["probs"] for a in arrays],
        targets,
        multi_label=test.multi_label,
        runs=config.bootstrap,
    )
    diffs = [r["paired_f1"]["diff"] for r in rows]
    summary["paired_f1"]["per_seed"] = diffs
    summary["paired_f1"]["seeds_positive"] = int(sum(d > 0 for d in diffs))
    summary["atcon_selected_start"] = int(sum(r["atcon"]["best_epoch"] == -1 for r in rows))
    if all("control" in a for a in arrays):
        summary["paired_f1_vs_control"] = paired_bootstrap_macro_f1(
            [a["control"]["probs"] for a in arrays],
            [a["atcon"]["probs"] for a in arrays],
            targets,
            multi_label=test.multi_label,
            runs=config.bootstrap,
        )
    if all("iou" in a["baseline"] for a in arrays):
        summary["paired_miou"] = paired_bootstrap_mean(
            [a["baseline"]["iou"] for a in arrays], [a["atcon"]["iou"] for a in arrays], runs=config.bootstrap
        )
        summary["paired_pointing"] = paired_bootstrap_mean(
            [a["baseline"]["pointing"] for a in arrays], [a["atcon"]["pointing"] for a in arrays], runs=config.bootstrap
        )
    return summary


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _signed(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (macro-F1 and localisation in points, i.e. x100)."""
    cfg = results["config"]
    has_loc = any("paired_miou" in r["summary"] for r in results["runs"])
    has_ctl = any("control" in r["summary"] for r in results["runs"])
    head = ["N / class", "seeds", "baseline F1", "ATCON F1", "Δ F1 [95% CI]", "seeds Δ>0"]
    if has_ctl:
        head += ["control F1", "Δ vs control [CI]"]
    if has_loc:
        head += ["mIoU base → ATCON", "Δ mIoU [CI]", "pointing base → ATCON", "Δ pointing [CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in results["runs"]:
        s = run["summary"]
        p = s["paired_f1"]
        cells = [
            str(run["images_per_class"]),
            str(len(run["seeds"])),
            f"{_pct(s['baseline']['macro_f1_mean'])} ± {_pct(s['baseline']['macro_f1_std'])}",
            f"{_pct(s['atcon']['macro_f1_mean'])} ± {_pct(s['atcon']['macro_f1_std'])}",
            f"{_signed(p['diff'])} [{_signed(p['low'])}, {_signed(p['high'])}]",
            f"{p['seeds_positive']}/{len(run['seeds'])}",
        ]
        if has_ctl:
            c = s.get("paired_f1_vs_control", {})
            cells += [
                f"{_pct(s.get('control', {}).get('macro_f1_mean'))}",
                f"{_signed(c.get('diff'))} [{_signed(c.get('low'))}, {_signed(c.get('high'))}]",
            ]
        if has_loc:
            m, q = s.get("paired_miou", {}), s.get("paired_pointing", {})
            cells += [
                f"{_pct(m.get('a'))} → {_pct(m.get('b'))}",
                f"{_signed(m.get('diff'))} [{_signed(m.get('low'))}, {_signed(m.get('high'))}]",
                f"{_pct(q.get('a'))} → {_pct(q.get('b'))}",
                f"{_signed(q.get('diff'))} [{_signed(q.get('low'))}, {_signed(q.get('high'))}]",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\n{cfg['arch']} on `{cfg['data']}`; baseline {cfg['epochs']} epochs at lr {cfg['lr']:g}, ATCON "
        f"{cfg['mode']} {cfg['finetune_epochs']} epochs at lr {cfg['finetune_lr']:g}, alpha {cfg['alpha']:g}"
        + (f", lambda {cfg['atcon_weight']:g}" if cfg["mode"] == "combined" else "")
        + f". Values are points (x100), mean ± std over seeds; CIs: paired bootstrap over test items "
        f"({cfg['bootstrap']} resamples, seeds averaged).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot(results: dict[str, Any], path: Path) -> Path:
    """PNG of macro-F1 (mean ± std over seeds) against labelled items per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(results["runs"], key=lambda r: r["images_per_class"])
    xs = [r["images_per_class"] for r in runs]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for key, label, style in (
        ("baseline", "supervised baseline", "o-"),
        ("atcon", "ATCON", "s-"),
        ("control", "control", "^--"),
    ):
        if not all(key in r["summary"] for r in runs):
            continue
        ys = [100 * r["summary"][key]["macro_f1_mean"] for r in runs]
        es = [100 * r["summary"][key]["macro_f1_std"] for r in runs]
        ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labelled items per class")
    ax.set_ylabel("test macro-F1 (points)")
    ax.set_title(f"{results['config']['arch']} on {results['data']['source']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def run_experiment(config: ExperimentConfig) -> dict[str, Any]:
    """Run every N and seed, write JSON / Markdown / PNG, and return the results dict."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}")
    t_start = time.perf_counter()
    out = Path(config.out)
    work_dir = Path(config.work_dir) if config.work_dir else out.parent / f".{out.stem}-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(config, work_dir)
    if splits.train.frame_shape[0] == 1 and is_video_arch(config.arch):
        logger.warning("%s on single images: a 3D net sees one frame per item", config.arch)
    logger.info("data: %s", json.dumps(splits.description))
    backbone = pretrained_backbone(config, splits, work_dir)
    runs = []
    for n in config.images_per_class:
        rows = [run_seed(config, splits, n, seed, work_dir, backbone) for seed in range(config.seeds)]
        runs.append({"images_per_class": n, "seeds": rows, "summary": _summarise(rows, splits, config)})
    results = {
        "config": asdict(config),
        "data": splits.description,
        "runs": runs,
        "seconds": time.perf_counter() - t_start,
        "torch_threads": torch.get_num_threads(),
    }
    clean = _jsonable(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean, indent=2))
    out.with_suffix(".md").write_text(markdown_table(clean))
    if len(config.images_per_class) > 1:
        plot(clean, out.with_suffix(".png"))
    logger.info("experiment done in %.1fs: %s", results["seconds"], out)
    return clean


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str = "wardwatch experiment atcon") -> argparse.ArgumentParser:
    """The argparse parser of ``wardwatch experiment atcon``."""
    d = ExperimentConfig(data="")
    p = argparse.ArgumentParser(prog=prog, description="ATCON vs supervised baseline on a small labelled set.")
    p.add_argument("--data", required=True, help="imagefolder:PATH | voc:PATH | csv:PATH[,K=V] | synthetic[:K=V,...]")
    p.add_argument("--arch", default=d.arch, choices=ARCHITECTURES)
    p.add_argument("--images-per-class", type=int, nargs="+", default=d.images_per_class, metavar="N")
    p.add_argument("--seeds", type=int, default=d.seeds, metavar="K", help="seeds 0..K-1")
    p.add_argument("--out", default=d.out, help="results JSON (Markdown and PNG are written beside it)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="baseline epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="baseline learning rate")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    p.add_argument("--mode", default=d.mode, choices=[m for m in MODES if m != "supervised"])
    p.add_argument("--alpha", type=float, default=d.alpha, help="labelled oversampling factor")
    p.add_argument("--lambda", dest="atcon_weight", type=float, default=d.atcon_weight, help="combined-mode weight")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--unlabelled-batch-size", type=int, default=d.unlabelled_batch_size)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0 = off)")
    p.add_argument("--atcon-grad-clip", type=float, default=None, help="max gradient norm of ATCON steps")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--resolution-match", default=d.resolution_match, choices=RESOLUTION_MATCHES)
    p.add_argument("--similarity", default=d.similarity, choices=SIMILARITIES)
    p.add_argument("--fine-method", default=d.fine_method, choices=FINE_METHODS)
    p.add_argument("--mask-intensity", type=float, default=d.mask_intensity)
    p.add_argument("--detach-mask", action="store_true", help="ablation: no gradient through the mask")
    p.add_argument("--reflect-padding", action="store_true")
    p.add_argument("--fully-balanced", action="store_true")
    p.add_argument(
        "--freeze-bn",
        default=d.freeze_bn,
        choices=("none", "finetune", "all"),
        help="BatchNorm statistics frozen in supervised steps: never, while fine-tuning (default), always",
    )
    p.add_argument("--control", action="store_true", help="also fine-tune without unlabelled data")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this square size")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples")
    p.add_argument("--no-localisation", dest="localisation", action="store_false")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work-dir", default=None, help="generated data and cached baselines")
    p.add_argument("--no-cache", dest="cache_baselines", action="store_false")
    p.add_argument(
        "--pretrained", default=None, help="initialise every model from these weights (checkpoint or state dict)"
    )
    p.add_argument("--progress", action="store_true", default=None, help="tqdm progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of parsed arguments."""
    values = {k: v for k, v in vars(args).items() if k != "threads"}
    if values.get("grad_clip") == 0:
        values["grad_clip"] = None
    return ExperimentConfig(**values)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wardwatch experiment atcon``; returns the process exit code."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = run_experiment(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        logger.error("experiment failed: %s", err)
        return 2
    for run in results["runs"]:
        p = run["summary"]["paired_f1"]
        logger.info(
            "N=%d: baseline %.1f, ATCON %.1f, diff %+.1f [%+.1f, %+.1f] macro-F1 points",
            run["images_per_class"],
            100 * run["summary"]["baseline"]["macro_f1_mean"],
            100 * run["summary"]["atcon"]["macro_f1_mean"],
            100 * p["diff"],
            100 * p["low"],
            100 * p["high"],
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_cli())
