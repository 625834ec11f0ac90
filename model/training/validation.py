"""Scoring a labelled set during training: model selection and the fine-tune comparison.

``evaluate`` runs under ``torch.inference_mode()`` with the model in eval mode (its mode is
restored), through the same batch loader and input path as training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.training.loader import batch_loader, model_input
from model.training.metrics import class_targets, macro_f1, per_class_f1
from model.training.steps import supervised_loss
from model.training.training_data import TrainingData
from model.weights import InputSpec

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    """Scores on a labelled set: mean loss, macro-F1, per-class F1 ``[K]`` and probabilities ``[N, K]``."""

    loss: float
    macro_f1: float
    per_class_f1: list[float | None]
    probs: np.ndarray

    def as_metrics(self, class_names: list[str]) -> dict[str, Any]:
        """Plain dict for checkpoints and logs (F1 of an absent class is None)."""
        return {
            "loss": self.loss,
            "macro_f1": self.macro_f1,
            "per_class_f1": dict(zip(class_names, self.per_class_f1, strict=True)),
        }


def evaluate(
    model: nn.Module,
    data: TrainingData,
    spec: InputSpec,
    *,
    device: torch.device | None = None,
    batch_size: int = 64,
    pos_weight: Tensor | None = None,
    num_workers: int = 0,
) -> EvalResult:
    """Loss, macro-F1 and per-class F1 of ``model`` on ``data`` (eval mode, inference mode; mode restored).

    Multi-label: sigmoid > 0.5 per class; single-label: argmax of the softmax (ATCON.md).
    """
    dev = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs: list[np.ndarray] = []
    total = 0.0
    batches = [np.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]
    try:
        with torch.inference_mode():
            for frames, labels in batch_loader(data, batches, num_workers=num_workers):
                logits = model(model_input(frames, spec, dev)).float()
                y = torch.from_numpy(np.ascontiguousarray(labels)).to(dev)
                total += float(supervised_loss(logits, y, multi_label=spec.multi_label, pos_weight=pos_weight)) * len(y)
                p = torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=1)
                probs.append(p.cpu().numpy())
    finally:
        model.train(was_training)
    all_probs = np.concatenate(probs) if probs else np.zeros((0, data.num_classes), dtype=np.float32)
    targets = class_targets(data.labels, multi_label=spec.multi_label)
    per = per_class_f1(all_probs, targets, multi_label=spec.multi_label)
    return EvalResult(
        loss=total / max(len(data), 1),
        macro_f1=macro_f1(all_probs, targets, multi_label=spec.multi_label),
        per_class_f1=[None if math.isnan(v) else float(v) for v in per],
        probs=all_probs,
    )
