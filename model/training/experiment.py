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
4. optionally a **control** fine-tunes the baseline with exactly ATCON's labelled steps but no
   unlabelled ones (``--control``): it separates ATCON's effect from that of simply training the
   baseline longer;
5. all models are scored on the same held-out test split: macro-F1 and mAP with bootstrap CIs,
   the paired ATCON - baseline difference (headline interval: seeds crossed with test videos,
   :mod:`model.training.cluster_bootstrap`), and where the data has regions the localisation
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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model.attribution.agreement import SIMILARITIES
from model.files import atomic_path
from model.nets import ARCHITECTURES, build_model, is_video_arch
from model.training.atcon import FINE_METHODS, RESOLUTION_MATCHES, ATCONConfig, reflect_padding
from model.training.datasets import BACKGROUND, TrainingData
from model.training.evaluation import (
    average_drop_increase,
    bootstrap_macro_f1,
    bootstrap_mean,
    class_targets,
    grad_cam_maps,
    localisation,
    mean_average_precision,
    paired_bootstrap_mean,
    per_class_f1,
    predict_probs,
)
from model.training.experiment_data import SYNTHETIC_DEFAULTS, Splits, load_splits
from model.training.experiment_report import jsonable, markdown_table, paired_f1, plot, summarise
from model.training.trainer import (
    MODES,
    FinetuneConfig,
    labelled_steps_per_epoch,
    select_labelled,
    show_progress,
    train,
)
from model.weights import InputSpec

__all__ = [
    "SYNTHETIC_DEFAULTS",
    "ExperimentConfig",
    "Splits",
    "build_parser",
    "load_splits",
    "pretrained_backbone",
    "run_cli",
    "run_experiment",
    "run_seed",
]

logger = logging.getLogger(__name__)


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
    finetune_lr: float = 1e-5
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
    tensorboard_dir: str | None = None
    ignore_background: bool = False


# --------------------------------------------------------------------------------------------
# One seed
# --------------------------------------------------------------------------------------------


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
    epochs: int,
    lr: float,
    finetuning: bool = True,
    run_name: str | None = None,
    class_names: Sequence[str] = (),
) -> FinetuneConfig:
    """The trainer's settings for one model of a run (``run_name``: its TensorBoard sub-folder)."""
    tensorboard = str(Path(config.tensorboard_dir) / run_name) if config.tensorboard_dir and run_name else None
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
        atcon=_atcon_config(config, class_names),
        seed=seed,
        device=config.device,
        progress=config.progress,
        select_initial=mode != "supervised",
        freeze_batchnorm=config.freeze_bn == "all" or (config.freeze_bn == "finetune" and finetuning),
        tensorboard_dir=tensorboard,
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
    with atomic_path(cache) as tmp:
        torch.save(state, tmp)
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
                config,
                mode="supervised",
                seed=seed,
                epochs=config.epochs,
                lr=config.lr,
                finetuning=False,
                run_name=f"n{n}-seed{seed}-baseline",
            ),
        )
        base_info = {
            "best_epoch": result.best_epoch,
            "val_macro_f1": result.best_val_macro_f1,
            "seconds": result.seconds,
        }
        if config.cache_baselines:
            with atomic_path(cache) as tmp:
                torch.save({"model": _state(model), "info": base_info}, tmp)
    base_state = _state(model)
    base_metrics, base_arrays = _evaluate(model, splits, config, seed=seed)
    row["baseline"] = {**base_info, **base_metrics}
    row["baseline"]["train_seconds"] = time.perf_counter() - t0

    # 2. ATCON fine-tuning from the baseline's best weights
    t0 = time.perf_counter()
    model = _new_model(config, k, seed)
    model.load_state_dict(base_state)
    atcon_cfg = _train_config(
        config,
        mode=config.mode,
        seed=seed,
        epochs=config.finetune_epochs,
        lr=config.finetune_lr,
        run_name=f"n{n}-seed{seed}-atcon",
        class_names=pool.class_names,
    )
    ft = train(
        model, labelled=labelled, unlabelled=unlabelled, validation=splits.val, spec=splits.spec, config=atcon_cfg
    )
    at_metrics, at_arrays = _evaluate(model, splits, config, seed=seed)
    row["atcon"] = {
        "best_epoch": ft.best_epoch,
        "val_macro_f1": ft.best_val_macro_f1,
        "start_val_macro_f1": ft.initial_val_macro_f1,
        "seconds": ft.seconds,
        "labelled_steps": ft.labelled_steps,
        "unlabelled_steps": ft.unlabelled_steps,
        **at_metrics,
        "history": [_history_row(h) for h in ft.history],
    }
    arrays = {"baseline": base_arrays, "atcon": at_arrays}

    # 3. control: same labelled steps, no unlabelled ones
    if config.control:
        model = _new_model(config, k, seed)
        model.load_state_dict(base_state)
        ctl = train(
            model,
            labelled=labelled,
            unlabelled=None,
            validation=splits.val,
            spec=splits.spec,
            config=_control_config(config, atcon_cfg, len(labelled), len(unlabelled), n=n, seed=seed),
        )
        ctl_metrics, ctl_arrays = _evaluate(model, splits, config, seed=seed)
        row["control"] = {
            "best_epoch": ctl.best_epoch,
            "val_macro_f1": ctl.best_val_macro_f1,
            "start_val_macro_f1": ctl.initial_val_macro_f1,
            "labelled_steps": ctl.labelled_steps,
            **ctl_metrics,
            "history": [_history_row(h) for h in ctl.history],
        }
        arrays["control"] = ctl_arrays
        if ctl.labelled_steps != ft.labelled_steps:  # cannot happen unless the schedules diverge
            logger.warning("control took %d labelled steps, ATCON %d", ctl.labelled_steps, ft.labelled_steps)

    row["paired_f1"] = paired_f1(
        [base_arrays["probs"]], [at_arrays["probs"]], splits.test, bootstrap=config.bootstrap, seed=seed
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


def _control_config(
    config: ExperimentConfig, atcon_cfg: FinetuneConfig, ns: int, nu: int, *, n: int, seed: int
) -> FinetuneConfig:
    """The supervised control of an ATCON run: per epoch exactly the labelled steps ATCON takes.

    Matched through ``steps_per_epoch`` rather than by assuming the supervised epoch length, so
    the control stays fair in every mode: alternating takes ``ceil(alpha Ns / Bs)`` labelled steps
    (the supervised default), combined ``ceil(max(alpha Ns / Bs, Nu / Bu))``, unsupervised none
    (the control then keeps the baseline: zero epochs).
    """
    cfg = _train_config(
        config,
        mode="supervised",
        seed=seed,
        epochs=config.finetune_epochs,
        lr=config.finetune_lr,
        run_name=f"n{n}-seed{seed}-control",
    )
    cfg.select_initial = True
    lab_steps = labelled_steps_per_epoch(atcon_cfg, ns, nu)
    if lab_steps == 0:
        cfg.epochs = 0
    else:
        cfg.steps_per_epoch = lab_steps
    return cfg


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
    )
    out = {k: h[k] for k in keep if k in h}
    for k in ("grad_norm_supervised", "grad_norm_unsupervised", "grad_norm_combined"):
        if k in h:
            out[k] = h[k]
    return out


# Settings that do not change what a (N, seed) run computes: left out of its cache key, so a run
# can be extended (more seeds, another N) or re-reported without training anything again.
_NOT_IN_RUN_KEY = frozenset(
    {"images_per_class", "seeds", "out", "work_dir", "cache_baselines", "progress", "tensorboard_dir", "device"}
)
# 2: alternating epochs with exactly ceil(alpha Ns / Bs) labelled steps (were Bernoulli draws with an
# item-counted p) and a control matched to them: runs of format 1 are stale.
_RUN_FORMAT = 2


def _run_key(config: ExperimentConfig, n: int, seed: int) -> str:
    fields = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_RUN_KEY}
    blob = json.dumps({"config": fields, "n": n, "seed": seed, "format": _RUN_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_run(path: Path) -> dict[str, Any] | None:
    """A finished (N, seed) row and its per-item arrays, or None when absent or unreadable."""
    arrays_path = path.with_suffix(".npz")
    if not (path.is_file() and arrays_path.is_file()):
        return None
    try:
        row = json.loads(path.read_text())
        with np.load(arrays_path) as npz:
            arrays: dict[str, dict[str, np.ndarray]] = {}
            for name in npz.files:
                model_name, _, key = name.partition("/")
                arrays.setdefault(model_name, {})[key] = npz[name]
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable cached run %s: %s", path, err)
        return None
    row["_arrays"] = arrays
    return row


def _save_run(path: Path, row: dict[str, Any]) -> None:
    """Write the row (JSON) and its arrays (npz), each atomically: arrays first, so a row file
    never exists without its arrays."""
    flat = {f"{m}/{k}": v for m, d in row["_arrays"].items() for k, v in d.items()}
    with atomic_path(path.with_suffix(".npz"), suffix=".npz") as tmp:
        np.savez(tmp, **flat)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(row)))


def _cached_run_seed(
    config: ExperimentConfig,
    splits: Splits,
    n: int,
    seed: int,
    work_dir: Path,
    backbone: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """:func:`run_seed`, kept in ``work_dir/runs`` so an interrupted experiment resumes where it
    stopped and more seeds extend a finished one (``--no-cache`` recomputes)."""
    path = work_dir / "runs" / f"{_run_key(config, n, seed)}.json"
    if config.cache_baselines:
        cached = _load_run(path)
        if cached is not None:
            logger.info("N=%d seed=%d: finished run from cache %s", n, seed, path)
            return cached
    row = run_seed(config, splits, n, seed, work_dir, backbone)
    if config.cache_baselines:
        _save_run(path, row)
    return row


def run_experiment(config: ExperimentConfig) -> dict[str, Any]:
    """Run every N and seed, write JSON / Markdown / PNG, and return the results dict."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}")
    t_start = time.perf_counter()
    out = Path(config.out)
    work_dir = Path(config.work_dir) if config.work_dir else out.parent / f".{out.stem}-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(
        config.data,
        work_dir,
        image_size=config.image_size,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
    )
    if splits.train.frame_shape[0] == 1 and is_video_arch(config.arch):
        logger.warning("%s on single images: a 3D net sees one frame per item", config.arch)
    logger.info("data: %s", json.dumps(splits.description))
    backbone = pretrained_backbone(config, splits, work_dir)
    runs = []
    total = len(config.images_per_class) * config.seeds
    bar = tqdm(total=total, desc="experiment runs (N, seed)", disable=not show_progress(config.progress))
    try:
        for n in config.images_per_class:
            rows = []
            for seed in range(config.seeds):
                bar.set_postfix(n=n, seed=seed)
                rows.append(_cached_run_seed(config, splits, n, seed, work_dir, backbone))
                bar.update()
            summary = summarise(rows, splits.test, bootstrap=config.bootstrap)
            runs.append({"images_per_class": n, "seeds": rows, "summary": summary})
    finally:
        bar.close()
    results = {
        "config": asdict(config),
        "data": splits.description,
        "runs": runs,
        "seconds": time.perf_counter() - t_start,
        "torch_threads": torch.get_num_threads(),
    }
    clean = jsonable(results)
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
    p.add_argument(
        "--ignore-background",
        action="store_true",
        help=f"single-label data: the ATCON loss explains the top class other than {BACKGROUND!r}",
    )
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
    p.add_argument(
        "--no-cache", dest="cache_baselines", action="store_false", help="recompute cached baselines and runs"
    )
    p.add_argument(
        "--pretrained", default=None, help="initialise every model from these weights (checkpoint or state dict)"
    )
    p.add_argument("--progress", action="store_true", default=None, help="tqdm progress bars (default: on a terminal)")
    p.add_argument("--tensorboard", dest="tensorboard_dir", default=None, help="write TensorBoard scalars here")
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
            "N=%d: baseline %.1f, ATCON %.1f, diff %+.1f macro-F1 points, 95%% CI [%+.1f, %+.1f] over seeds "
            "and %d test videos ([%+.1f, %+.1f] over test items, [%+.1f, %+.1f] over seeds and items)",
            run["images_per_class"],
            100 * run["summary"]["baseline"]["macro_f1_mean"],
            100 * run["summary"]["atcon"]["macro_f1_mean"],
            100 * p["diff"],
            *(100 * _nan(p.get(key)) for key in ("cluster_low", "cluster_high")),
            p.get("clusters", 0),
            100 * p["low"],
            100 * p["high"],
            *(100 * _nan(p.get(key)) for key in ("seeds_low", "seeds_high")),
        )
    return 0


def _nan(v: float | None) -> float:
    """JSON null (NaN written by :func:`jsonable`) back to NaN for printing."""
    return float("nan") if v is None else float(v)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_cli())
