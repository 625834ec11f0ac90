"""One (N, seed) run of the ATCON experiment: baseline, ATCON fine-tuning, step-matched control.

Every model trains through the one loop (:func:`model.training.loop.train`) with a
:class:`~model.training.config.TrainConfig` derived from the experiment's config, and is scored on
the evaluation split (the validation split while a configuration is being chosen, the test split
once it is registered; see :mod:`model.training.experiment`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.files import atomic_path
from model.nets import build_model
from model.pretrained import build_pretrained_model
from model.training.atcon import ATCONConfig, reflect_padding
from model.training.bootstrap import bootstrap_mean, paired_bootstrap_mean
from model.training.config import TrainConfig
from model.training.experiment_config import ExperimentConfig
from model.training.experiment_data import Splits
from model.training.experiment_report import paired_f1
from model.training.localisation import average_drop_increase, grad_cam_maps, localisation
from model.training.loop import TrainResult, train
from model.training.metrics import bootstrap_macro_f1, class_targets, mean_average_precision, per_class_f1
from model.training.prediction import predict_probs
from model.training.schedule import labelled_steps_per_epoch, select_labelled
from model.training.training_data import BACKGROUND, TrainingData
from model.weights import InputSpec

__all__ = ["evaluation_split", "pretrained_backbone", "run_seed"]

logger = logging.getLogger(__name__)

Backbone = dict[str, torch.Tensor]


def evaluation_split(config: ExperimentConfig, splits: Splits) -> TrainingData:
    """The split the models are scored on: validation while choosing, test once registered."""
    return splits.test if config.phase == "test" else splits.val


def _atcon_config(config: ExperimentConfig, class_names: Sequence[str] = ()) -> ATCONConfig:
    ignore = (list(class_names).index(BACKGROUND),) if config.ignore_background and BACKGROUND in class_names else ()
    if config.ignore_background and class_names and not ignore:
        logger.warning("--ignore-background: the data has no %r class (multi-label?); nothing is ignored", BACKGROUND)
    return ATCONConfig(
        resolution_match=config.resolution_match,
        similarity=config.similarity,
        fine_method=config.fine_method,
        mask_intensity=config.mask_intensity,
        detach_mask=config.detach_mask,
        ignore_classes=ignore,
    )


def _train_config(
    config: ExperimentConfig,
    *,
    mode: str,
    seed: int,
    finetuning: bool,
    run_name: str,
    class_names: Sequence[str] = (),
) -> TrainConfig:
    """The loop's settings for one model of a run (``run_name``: its TensorBoard sub-folder)."""
    tensorboard = str(Path(config.tensorboard_dir) / run_name) if config.tensorboard_dir else None
    return TrainConfig(
        mode=mode,
        epochs=config.finetune_epochs if finetuning else config.epochs,
        lr=config.finetune_lr if finetuning else config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        unlabelled_batch_size=config.unlabelled_batch_size,
        alpha=config.alpha,
        atcon_weight=config.atcon_weight,
        grad_clip=config.grad_clip,
        atcon_grad_clip=config.atcon_grad_clip,
        atcon=_atcon_config(config, class_names),
        seed=seed,
        device=config.device,
        progress=config.progress,
        select_initial=finetuning,
        freeze_batchnorm=config.freeze_bn == "all" or (config.freeze_bn == "finetune" and finetuning),
        tensorboard_dir=tensorboard,
    )


def _control_config(
    config: ExperimentConfig, atcon_cfg: TrainConfig, ns: int, nu: int, *, n: int, seed: int
) -> TrainConfig:
    """The supervised control of an ATCON run: per epoch exactly the labelled steps ATCON takes.

    Matched through ``steps_per_epoch`` rather than by assuming the supervised epoch length, so
    the control stays fair in every mode: alternating takes ``ceil(alpha Ns / Bs)`` labelled steps
    (the supervised default), combined ``ceil(max(alpha Ns / Bs, Nu / Bu))``, unsupervised none
    (the control then keeps the baseline: zero epochs).
    """
    cfg = _train_config(config, mode="supervised", seed=seed, finetuning=True, run_name=f"n{n}-seed{seed}-control")
    lab_steps = labelled_steps_per_epoch(atcon_cfg, ns, nu)
    return cfg.with_overrides(epochs=0) if lab_steps == 0 else cfg.with_overrides(steps_per_epoch=lab_steps)


def score_split(
    model: nn.Module, data: TrainingData, spec: InputSpec, config: ExperimentConfig, *, seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of ``model`` on ``data`` and the per-item arrays needed for paired comparisons."""
    probs = predict_probs(model, data.frames, spec)
    targets = class_targets(data.labels, multi_label=data.multi_label)
    f1, low, high = bootstrap_macro_f1(probs, targets, multi_label=data.multi_label, runs=config.bootstrap, seed=seed)
    per = per_class_f1(probs, targets, multi_label=data.multi_label)
    metrics: dict[str, Any] = {
        "macro_f1": f1,
        "macro_f1_ci": [low, high],
        "map": mean_average_precision(probs, targets),
        "per_class_f1": {n: (None if math.isnan(v) else float(v)) for n, v in zip(data.class_names, per, strict=True)},
    }
    arrays: dict[str, np.ndarray] = {"probs": probs}
    if config.localisation and data.regions is not None:
        loc = localisation(model, data.frames, data.labels, data.regions, spec, probs=probs)
        metrics.update(loc.summary())
        _, miou_low, miou_high = bootstrap_mean(loc.iou, runs=config.bootstrap, seed=seed)
        metrics["miou_ci"] = [miou_low, miou_high]
        arrays["iou"], arrays["pointing"] = loc.iou, loc.pointing
        metrics.update(_drop_increase(model, data, spec, loc.predicted))
    return metrics, arrays


def _drop_increase(model: nn.Module, data: TrainingData, spec: InputSpec, predicted: np.ndarray) -> dict[str, float]:
    """Average Drop / Increase in Confidence (%) of Grad-CAM at 100/50/15 % kept."""
    from model.inference import frames_to_tensor

    maps = torch.from_numpy(grad_cam_maps(model, data.frames, spec, predicted))
    out: dict[str, float] = {}
    for keep in (1.0, 0.5, 0.15):
        drops, incs = 0.0, 0.0
        for i in range(0, len(data), 64):
            idx = np.arange(i, min(i + 64, len(data)))
            x = frames_to_tensor(data.batch(idx), spec)
            m = maps[idx][:, None].expand(-1, x.shape[2], -1, -1)  # same 2-D map on every frame
            d, c = average_drop_increase(
                model, x, m, torch.from_numpy(predicted[idx]), multi_label=spec.multi_label, keep_fraction=keep
            )
            drops, incs = drops + d * idx.size, incs + c * idx.size
        tag = int(round(keep * 100))
        out[f"average_drop_{tag}"] = drops / max(len(data), 1)
        out[f"increase_in_confidence_{tag}"] = incs / max(len(data), 1)
    return out


def _state(model: nn.Module) -> Backbone:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _new_model(config: ExperimentConfig, num_classes: int, seed: int, backbone: Backbone | None = None) -> nn.Module:
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


def pretrained_backbone(config: ExperimentConfig, splits: Splits, work_dir: Path) -> Backbone | None:
    """Backbone weights: ``config.pretrained`` (``torchvision:NAME`` or a file, through
    :mod:`model.pretrained`), else pretrained on ``splits.pretrain`` (cached in ``work_dir``), else None.
    """
    if config.pretrained:
        return _state(
            build_pretrained_model(config.arch, num_classes=splits.train.num_classes, pretrained=config.pretrained)
        )
    data = splits.pretrain
    if data is None:
        return None
    epochs = int(splits.description.get("options", {}).get("pretrain_epochs", 15))
    blob = [
        config.arch,
        splits.description.get("video_seeds", {}).get("pretrain"),
        epochs,
        config.lr,
        config.reflect_padding,
        splits.spec.to_dict(),
        "loop-2",
    ]
    cache = work_dir / "pretrained" / f"{hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:16]}.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    groups = np.unique(data.groups)
    is_val = np.isin(data.groups, groups[: max(1, groups.size // 5)])
    model = _new_model(config, data.num_classes, 12345)
    result = train(
        model,
        labelled=data.subset(np.flatnonzero(~is_val)),
        unlabelled=None,
        validation=data.subset(np.flatnonzero(is_val)),
        spec=replace(splits.spec, multi_label=True),
        config=TrainConfig(
            mode="supervised",
            epochs=epochs,
            lr=config.lr,
            alpha=1.0,
            seed=0,
            device=config.device,
            progress=config.progress,
            select_initial=False,
        ),
    )
    logger.info("pretrained backbone on %s: val macro-F1 %.3f", data.class_names, result.best_val_macro_f1 or 0.0)
    state = _state(model)
    with atomic_path(cache) as tmp:
        torch.save(state, tmp)
    return state


def _baseline_key(config: ExperimentConfig, n: int, seed: int, splits: Splits) -> str:
    fields = {
        "pretrain": [splits.description.get("video_seeds", {}).get("pretrain"), config.pretrained],
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
        "freeze_bn": config.freeze_bn == "all",
        "version": 2,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _baseline(
    config: ExperimentConfig,
    splits: Splits,
    labelled: TrainingData,
    n: int,
    seed: int,
    work_dir: Path,
    backbone: Backbone | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The supervised baseline on the labelled set (cached: it does not depend on ATCON's settings)."""
    cache = work_dir / "baselines" / f"{_baseline_key(config, n, seed, splits)}.pt"
    model = _new_model(config, splits.train.num_classes, seed, backbone)
    if config.cache_baselines and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        model.load_state_dict(saved["model"])
        logger.info("N=%d seed=%d: baseline from cache %s", n, seed, cache)
        return model, saved["info"]
    cfg = _train_config(config, mode="supervised", seed=seed, finetuning=False, run_name=f"n{n}-seed{seed}-baseline")
    result = train(model, labelled=labelled, unlabelled=None, validation=splits.val, spec=splits.spec, config=cfg)
    info = {"best_epoch": result.best_epoch, "val_macro_f1": result.best_val_macro_f1, "seconds": result.seconds}
    if config.cache_baselines:
        with atomic_path(cache) as tmp:
            torch.save({"model": _state(model), "info": info}, tmp)
    return model, info


def _history_row(h: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "epoch",
        "loss",
        "sup_loss",
        "atcon_loss",
        "agreement",
        "atcon_top_class_share",
        "val_macro_f1",
        "labelled_steps",
        "unlabelled_steps",
        "grad_norm_supervised",
        "grad_norm_unsupervised",
        "grad_norm_combined",
    )
    return {k: h[k] for k in keep if k in h}


def _finetuned(result: TrainResult) -> dict[str, Any]:
    return {
        "best_epoch": result.best_epoch,
        "val_macro_f1": result.best_val_macro_f1,
        "start_val_macro_f1": result.initial_val_macro_f1,
        "seconds": result.seconds,
        "labelled_steps": result.labelled_steps,
        "unlabelled_steps": result.unlabelled_steps,
        "history": [_history_row(h) for h in result.history],
    }


def run_seed(
    config: ExperimentConfig, splits: Splits, n: int, seed: int, work_dir: Path, backbone: Backbone | None = None
) -> dict[str, Any]:
    """Baseline, ATCON (and control) for one N and seed; returns the JSON row and item arrays."""
    pool, scored = splits.train, evaluation_split(config, splits)
    lab = select_labelled(
        pool.labels, n, np.random.default_rng(seed), fully_balanced=config.fully_balanced, multi_label=pool.multi_label
    )
    rest = np.setdiff1d(np.arange(len(pool)), lab)
    labelled, unlabelled = pool.subset(lab), pool.subset(rest, unlabel=True)
    row: dict[str, Any] = {
        "seed": seed,
        "labelled": int(lab.size),
        "unlabelled": int(rest.size),
        "labelled_positives": labelled.positives().tolist(),
        "evaluated_on": config.phase,
    }
    t0 = time.perf_counter()
    model, base_info = _baseline(config, splits, labelled, n, seed, work_dir, backbone)
    base_state = _state(model)
    base_metrics, base_arrays = score_split(model, scored, splits.spec, config, seed=seed)
    row["baseline"] = {**base_info, **base_metrics, "train_seconds": time.perf_counter() - t0}
    arrays = {"baseline": base_arrays}
    atcon_cfg = _train_config(
        config,
        mode=config.mode,
        seed=seed,
        finetuning=True,
        run_name=f"n{n}-seed{seed}-atcon",
        class_names=pool.class_names,
    )
    runs = {"atcon": (atcon_cfg, unlabelled)}
    if config.control:
        runs["control"] = (_control_config(config, atcon_cfg, len(labelled), len(unlabelled), n=n, seed=seed), None)
    for name, (cfg, pool_u) in runs.items():
        model = _new_model(config, pool.num_classes, seed)
        model.load_state_dict(base_state)
        result = train(model, labelled=labelled, unlabelled=pool_u, validation=splits.val, spec=splits.spec, config=cfg)
        metrics, arrays[name] = score_split(model, scored, splits.spec, config, seed=seed)
        row[name] = {**_finetuned(result), **metrics}
    if "control" in row and row["control"]["labelled_steps"] != row["atcon"]["labelled_steps"]:
        logger.warning(
            "control took %d labelled steps, ATCON %d", row["control"]["labelled_steps"], row["atcon"]["labelled_steps"]
        )
    row.update(_paired(config, scored, arrays, seed))
    row["_arrays"] = arrays
    logger.info(
        "N=%d seed=%d: baseline F1 %.4f, ATCON F1 %.4f (best epoch %d)%s",
        n,
        seed,
        row["baseline"]["macro_f1"],
        row["atcon"]["macro_f1"],
        row["atcon"]["best_epoch"],
        f", control F1 {row['control']['macro_f1']:.4f}" if "control" in row else "",
    )
    return row


def _paired(
    config: ExperimentConfig, scored: TrainingData, arrays: dict[str, dict[str, np.ndarray]], seed: int
) -> dict[str, Any]:
    base, at = arrays["baseline"], arrays["atcon"]
    out: dict[str, Any] = {
        "paired_f1": paired_f1([base["probs"]], [at["probs"]], scored, bootstrap=config.bootstrap, seed=seed)
    }
    if "iou" in base:
        out["paired_miou"] = paired_bootstrap_mean(base["iou"], at["iou"], runs=config.bootstrap, seed=seed)
        out["paired_pointing"] = paired_bootstrap_mean(
            base["pointing"], at["pointing"], runs=config.bootstrap, seed=seed
        )
    return out
