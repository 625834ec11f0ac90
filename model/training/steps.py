"""One optimiser step of each kind: ATCON as a step strategy inside the one training loop.

* ``supervised``: the supervised loss of a labelled batch (BatchNorm in train mode unless
  ``freeze_batchnorm``);
* ``unsupervised``: the ATCON loss of an unlabelled batch (BatchNorm frozen by the loss itself);
* ``combined``: ``L_sup + lambda * L_atcon`` of one batch of each.

``alternating`` is not a step kind: it is a schedule of supervised and unsupervised steps
(:func:`model.training.schedule.epoch_schedule`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.training.atcon import ATCONLoss, frozen_batchnorm
from model.training.config import TrainConfig
from model.training.loader import Batch, model_input
from model.training.training_data import TrainingData
from model.weights import InputSpec

__all__ = ["StepContext", "class_pos_weight", "run_step", "supervised_loss"]


def supervised_loss(logits: Tensor, labels: Tensor, *, multi_label: bool, pos_weight: Tensor | None = None) -> Tensor:
    """BCE-with-logits over known entries (NaN labels ignored) or cross-entropy of the positive class.

    ``logits`` ``[B, K]``, ``labels`` float ``[B, K]`` (1 / 0 / NaN); ``pos_weight`` ``[K]``
    (multi-label only) weighs positives against rare-event imbalance.
    """
    if not multi_label:
        # A row with no positive (e.g. a rejected flag: 0 for its label, unknown for the rest) names no
        # class: it is left out rather than trained as class 0.
        known = (torch.nan_to_num(labels, nan=0.0) > 0.5).any(dim=1)
        if not bool(known.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[known], labels[known].nan_to_num(nan=0.0).argmax(dim=1))
    known = ~torch.isnan(labels)
    target = torch.where(known, labels, torch.zeros_like(labels))
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pos_weight) * known
    return per.sum() / known.sum().clamp_min(1)


def class_pos_weight(labelled: TrainingData | None, config: TrainConfig, device: torch.device) -> Tensor | None:
    """``sqrt(negatives / positives)`` per class, clipped to ``[1, max_pos_weight]``, or None.

    The square root, not the full ratio: full weighting would move an uninformative model's
    output to 0.5 and flood the review queue with borderline events.
    """
    if not config.pos_weight or labelled is None or not labelled.multi_label:
        return None
    y = labelled.labels
    pos = (np.nan_to_num(y, nan=0.0) > 0.5).sum(axis=0).astype(np.float64)
    neg = (np.nan_to_num(y, nan=1.0) < 0.5).sum(axis=0).astype(np.float64)
    ratio = np.clip(np.sqrt(neg / np.maximum(pos, 1.0)), 1.0, config.max_pos_weight)
    return torch.tensor(ratio, dtype=torch.float32, device=device)


@dataclass
class StepContext:
    """What every step of a run shares."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    atcon: ATCONLoss | None
    spec: InputSpec
    config: TrainConfig
    device: torch.device
    pos_weight: Tensor | None = None
    stats: dict[str, list[float]] = field(default_factory=dict)

    def record(self, key: str, value: float) -> None:
        self.stats.setdefault(key, []).append(float(value))


def run_step(
    ctx: StepContext, kind: str, labelled: Batch | None, unlabelled: Batch | None, rng: np.random.Generator
) -> float:
    """One optimiser step of ``kind`` on the given batches; returns its loss."""
    cfg = ctx.config
    ctx.optimizer.zero_grad(set_to_none=True)
    total: Tensor | None = None
    if kind in ("supervised", "combined"):
        assert labelled is not None
        total = _supervised_term(ctx, labelled, rng)
    if kind in ("unsupervised", "combined"):
        assert unlabelled is not None
        term = _atcon_term(ctx, unlabelled, rng) * (cfg.atcon_weight if kind == "combined" else 1.0)
        total = term if total is None else total + term
    assert total is not None
    # Only the weights' gradients: the ATCON input passes made the batch a leaf requiring grad,
    # and its (unused) gradient would cost another pass through the double-backward graph.
    total.backward(inputs=[p for p in ctx.model.parameters() if p.requires_grad])
    limit = cfg.atcon_grad_clip if (kind == "unsupervised" and cfg.atcon_grad_clip) else cfg.grad_clip
    ctx.record(f"grad_norm_{kind}", _clip(ctx.model, limit))
    ctx.optimizer.step()
    return float(total.detach())


def _supervised_term(ctx: StepContext, batch: Batch, rng: np.random.Generator) -> Tensor:
    frames, labels = batch
    cfg = ctx.config
    x = model_input(frames, ctx.spec, ctx.device, rng=rng, augmentation=cfg.augmentation if cfg.augment else None)
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(ctx.device)
    with frozen_batchnorm(ctx.model) if cfg.freeze_batchnorm else contextlib.nullcontext():
        logits = ctx.model(x)
    loss = supervised_loss(logits, y, multi_label=ctx.spec.multi_label, pos_weight=ctx.pos_weight)
    ctx.record("sup_loss", float(loss.detach()))
    return loss


def _atcon_term(ctx: StepContext, batch: Batch, rng: np.random.Generator) -> Tensor:
    assert ctx.atcon is not None
    cfg = ctx.config
    frames, _ = batch
    augmentation = cfg.augmentation if cfg.augment_unlabelled else None
    out = ctx.atcon(model_input(frames, ctx.spec, ctx.device, rng=rng, augmentation=augmentation))
    ctx.record("atcon_loss", float(out.loss.detach()))
    ctx.record("agreement", float(out.agreement.mean()))
    # Share of the batch explained as each class: a collapse shows up as one class -> 1.0.
    ctx.record("atcon_top_class_share", float(torch.bincount(out.targets).max()) / out.targets.numel())
    return out.loss


def _clip(model: nn.Module, limit: float | None) -> float:
    """Clip gradients to ``limit`` (global L2 norm) and return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    return float(nn.utils.clip_grad_norm_(params, limit if limit else float("inf")))
