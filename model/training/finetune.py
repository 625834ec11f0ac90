"""``finetune()``: the one call the server's training job makes.

Base checkpoint in, candidate checkpoint out::

    result = finetune(
        "models/v3.pt",
        out_path="models/v4-candidate.pt",
        labelled=[ReviewedClip(labels=labels_from_review(names, positives=["fall"]), video=..., times=...), ...],
        unlabelled=[ReviewedClip(video=..., times=...), ...],
        validation=[...],                      # labelled clips for model selection and comparison
        mode="alternating",
        hyperparameters={"epochs": 5, "lr": 1e-5, "alpha": 8},
        on_progress=lambda p: job.update(epoch=p.epoch, step=p.step, loss=p.loss, val_f1=p.val_macro_f1),
        should_cancel=lambda: job.cancel_requested(),
    )
    result.metrics["val_macro_f1"], result.comparison["diff_macro_f1"], result.sha256

The base model's architecture, class names and input spec carry over unchanged. Both the base
and the fine-tuned model are scored on the same validation clips (the side-by-side comparison).
The candidate file is written atomically by :func:`model.weights.save_checkpoint` only after
training finished; a cancelled job raises :class:`~model.training.loop.TrainingCancelled`
and leaves no file at ``out_path`` (a resumable state in ``work_dir``, if given, is always a
complete file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.pretrained import build_pretrained_model
from model.training.config import TrainConfig
from model.training.loop import TrainingCancelled, TrainProgress, train
from model.training.metrics import class_targets, mean_average_precision
from model.training.sources import ReviewedClip, reviewed_clips
from model.training.training_data import TrainingData
from model.training.validation import evaluate
from model.weights import InputSpec, load_checkpoint, save_checkpoint

__all__ = ["FinetuneResult", "TrainingCancelled", "finetune", "score"]

logger = logging.getLogger(__name__)

ClipsLike = TrainingData | Sequence[ReviewedClip]


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        path: the candidate checkpoint (a Wardwatch checkpoint, loadable with
            :func:`model.weights.load_checkpoint`).
        sha256: its hex digest (the model version's identity).
        metrics: stored in the checkpoint too: validation scores of the candidate, the base's,
            the mode and hyper-parameters, best epoch, step count, seconds.
        comparison: ``{"base": {...}, "candidate": {...}, "diff_macro_f1": float}`` on the same
            validation clips (empty without validation data).
        history: one row per epoch (losses, ATCON agreement, validation macro-F1).
    """

    path: str
    sha256: str
    metrics: dict[str, Any]
    comparison: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _as_data(clips: ClipsLike | None, class_names: Sequence[str], spec: InputSpec) -> TrainingData | None:
    if clips is None:
        return None
    if isinstance(clips, TrainingData):
        if list(clips.class_names) != list(class_names):
            raise ValueError(f"data classes {clips.class_names} differ from the model's {list(class_names)}")
        return clips
    clips = list(clips)
    return reviewed_clips(clips, class_names, spec) if clips else None


def score(model: Any, data: TrainingData, spec: InputSpec, *, batch_size: int = 64) -> dict[str, Any]:
    """Validation scores of ``model``: macro-F1, per-class F1, mAP and the item count."""
    result = evaluate(model, data, spec, batch_size=batch_size)
    return {
        "macro_f1": result.macro_f1,
        "per_class_f1": dict(zip(data.class_names, result.per_class_f1, strict=True)),
        "map": mean_average_precision(result.probs, class_targets(data.labels, multi_label=spec.multi_label)),
        "items": len(data),
    }


def finetune(
    base_checkpoint: str | os.PathLike[str],
    *,
    out_path: str | os.PathLike[str],
    labelled: ClipsLike | None,
    unlabelled: ClipsLike | None,
    validation: ClipsLike | None = None,
    mode: str = "alternating",
    hyperparameters: Mapping[str, Any] | TrainConfig | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    device: str = "auto",
    work_dir: str | os.PathLike[str] | None = None,
    also_compare: Mapping[str, str | os.PathLike[str]] | None = None,
    pretrained: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Fine-tune a Wardwatch checkpoint with ATCON (or supervised / combined) and save a candidate.

    Args:
        base_checkpoint: the starting model (``model.weights`` format).
        out_path: where the candidate checkpoint goes (written atomically, only on success).
        labelled: reviewed clips (labels per the model's class names: 1 / 0 / NaN), or
            :class:`TrainingData`. Needed unless ``mode="unsupervised"``.
        unlabelled: the ATCON pool (labels ignored). Needed unless ``mode="supervised"``.
        validation: labelled clips for model selection and the base-vs-candidate comparison;
            ``None``: the last epoch is kept and no comparison is made.
        mode: ``supervised`` / ``unsupervised`` / ``alternating`` / ``combined``.
        hyperparameters: :class:`TrainConfig` fields (e.g. ``epochs``, ``lr``, ``alpha``,
            ``atcon_weight``, ``grad_clip``, ``atcon={"detach_mask": True}``); unknown keys raise
            ``ValueError``. ``mode`` here overrides the one in ``hyperparameters``.
        on_progress: receives :class:`TrainProgress` (epoch, step, loss, validation macro-F1).
        should_cancel: polled before each step; True stops the job with
            :class:`TrainingCancelled` and nothing is written to ``out_path``.
        device: ``auto`` / ``cpu`` / ``cuda``.
        work_dir: if given, a resumable training state is kept there (``train_state.pt``) and a
            restarted job with the same arguments continues from the last completed epoch.
        also_compare: more checkpoints (name -> path, e.g. ``{"active": ...}`` when the server's
            active model is not the base) scored on the same validation clips; each lands in
            ``comparison["others"][name]``, or its reason when its classes or input differ.
        pretrained: start from this pretrained backbone (``torchvision:NAME`` or a file, see
            :mod:`model.pretrained`) with a new head, instead of the base model's weights; the base
            still gives the architecture, classes and input, and is what the candidate is compared with.
        provenance: what produced this candidate (e.g. ``{"job_id": 7}``), kept in its metrics. It also makes
            every job's file its own: a deterministic run repeated on the same data would otherwise write a
            checkpoint identical byte for byte to an earlier one (same SHA-256, so the same model version).

    Returns:
        :class:`FinetuneResult` (path, sha256, metrics, comparison, history).
    """
    config = _config(hyperparameters, mode=mode, device=device, work_dir=work_dir)
    loaded = load_checkpoint(base_checkpoint, device=device)
    spec, names = loaded.input_spec, loaded.class_names
    lab, unl, val = (_as_data(d, names, spec) for d in (labelled, unlabelled, validation))
    if unl is not None:  # the pool's labels are never used, even if present
        unl = unl.subset(np.arange(len(unl)), unlabel=True)
    base_scores = score(loaded.model, val, spec, batch_size=config.eval_batch_size) if val is not None else None
    start = loaded.model
    if pretrained:  # the base's architecture, classes and input; the weights from a pretrained backbone
        torch.manual_seed(config.seed)  # the new head: the same job gives the same model
        start = build_pretrained_model(loaded.arch, num_classes=len(names), pretrained=pretrained).to(loaded.device)
    logger.info(
        "fine-tuning %s (%s, %d classes, start %s) mode=%s: %d labelled, %d unlabelled, %d validation clips",
        base_checkpoint,
        loaded.arch,
        len(names),
        pretrained or "the base weights",
        config.mode,
        len(lab or ()),
        len(unl or ()),
        len(val or ()),
    )
    result = train(
        start,
        labelled=lab,
        unlabelled=unl,
        validation=val,
        spec=spec,
        config=config,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
    if should_cancel is not None and should_cancel():
        raise TrainingCancelled("cancelled before the candidate was saved")
    metrics: dict[str, Any] = {
        "finetune": {
            "base_checkpoint": str(base_checkpoint),
            "base_sha256": loaded.sha256,
            "pretrained": pretrained,
            "mode": config.mode,
            "hyperparameters": _portable(config),
            "best_epoch": result.best_epoch,
            "steps": result.steps,
            "labelled_steps": result.labelled_steps,
            "unlabelled_steps": result.unlabelled_steps,
            "seconds": round(result.seconds, 2),
            "labelled": len(lab or ()),
            "unlabelled": len(unl or ()),
            "provenance": dict(provenance or {}),
        }
    }
    comparison: dict[str, Any] = {}
    if val is not None and base_scores is not None:
        candidate = score(result.model, val, spec, batch_size=config.eval_batch_size)
        metrics.update({f"val_{k}": v for k, v in candidate.items()})
        metrics["base_val_macro_f1"] = base_scores["macro_f1"]
        comparison = {
            "base": base_scores,
            "candidate": candidate,
            "diff_macro_f1": candidate["macro_f1"] - base_scores["macro_f1"],
        }
        if also_compare:
            comparison["others"] = {
                name: _score_other(path, val, names, spec, config, device, candidate["macro_f1"])
                for name, path in also_compare.items()
            }
    sha = save_checkpoint(
        out_path, model=result.model.cpu(), arch=loaded.arch, class_names=names, input_spec=spec, metrics=metrics
    )
    return FinetuneResult(
        path=str(out_path), sha256=sha, metrics=metrics, comparison=comparison, history=result.history
    )


def _config(
    hyperparameters: Mapping[str, Any] | TrainConfig | None,
    *,
    mode: str,
    device: str,
    work_dir: str | os.PathLike[str] | None,
) -> TrainConfig:
    base = hyperparameters if isinstance(hyperparameters, TrainConfig) else TrainConfig.from_dict(hyperparameters or {})
    config = base.with_overrides(mode=mode, device=device)
    if config.reflect_padding:
        raise ValueError(
            "reflect_padding is not stored in checkpoints; fine-tuning refuses it to keep the model loadable"
        )
    if work_dir is not None:
        config = config.with_overrides(checkpoint_path=str(Path(work_dir) / "train_state.pt"), resume=True)
    return config


def _portable(config: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters for the model file, without machine-local paths."""
    out = config.to_dict()
    for key in ("checkpoint_path", "tensorboard_dir"):
        out.pop(key, None)
    return out


def _score_other(
    path: str | os.PathLike[str],
    val: TrainingData,
    names: Sequence[str],
    spec: InputSpec,
    config: TrainConfig,
    device: str,
    candidate_f1: float,
) -> dict[str, Any]:
    """Scores of another checkpoint on the candidate's validation clips (same classes and input only)."""
    other = load_checkpoint(path, device=device)
    if list(other.class_names) != list(names) or other.input_spec != spec:
        return {"comparable": False, "reason": "different class names or input spec than the base"}
    scores = score(other.model, val, spec, batch_size=config.eval_batch_size)
    return {"comparable": True, **scores, "diff_macro_f1": candidate_f1 - scores["macro_f1"]}
