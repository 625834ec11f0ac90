"""Predictions of a model on :class:`~model.training.training_data.TrainingData`-like inputs.

:func:`predict_probs` gives class probabilities (sigmoid > 0.5 or argmax is applied later by
:mod:`model.training.metrics`), batch by batch in eval mode; frames may be an ndarray or a lazy
store (:class:`~model.training.training_data.LazyFrames`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.inference import frames_to_tensor, model_device
from model.weights import InputSpec

__all__ = ["predict_probs"]


def predict_probs(
    model: nn.Module, frames: object, spec: InputSpec, *, batch_size: int = 64, device: torch.device | None = None
) -> np.ndarray:
    """Probabilities ``[N, K]`` (sigmoid or softmax per ``spec.multi_label``) in eval mode.

    ``frames``: anything indexable by an index array giving uint8 ``[B, T, H, W, 3]`` (an
    ndarray or :class:`~model.training.training_data.LazyFrames`). The model's mode is restored.
    """
    n = len(frames)  # type: ignore[arg-type]
    dev = device or model_device(model)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                idx = np.arange(i, min(i + batch_size, n))
                logits = model(frames_to_tensor(np.asarray(frames[idx]), spec).to(dev)).float()  # type: ignore[index]
                p = torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=1)
                out.append(p.cpu().numpy())
    finally:
        model.train(was_training)
    k = out[0].shape[1] if out else 0
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)
