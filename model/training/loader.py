"""Batches for the training loop through ``torch.utils.data``: decoding overlaps compute.

:class:`TrainingBatches` is a map-style ``Dataset`` over :class:`~model.training.training_data.TrainingData`
that fetches a whole batch at once (``__getitems__``: one vectorised read of in-memory frames, or one
call of each lazy frame loader, e.g. a video decode); :func:`batch_loader` wraps it in a
``DataLoader`` whose ``batch_sampler`` is the epoch's precomputed index batches, so the batches and
their order are decided in the training process (reproducible) while ``num_workers`` processes
decode ahead. :func:`model_input` turns uint8 frames into the model's normalised input, augmenting
in pixel units first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from model.inference import frames_to_tensor, normalize_tensor
from model.training.augment import AugmentConfig, augment_batch
from model.training.training_data import TrainingData
from model.weights import InputSpec

__all__ = ["TrainingBatches", "batch_loader", "model_input"]

Batch = tuple[np.ndarray, np.ndarray]


class TrainingBatches(Dataset[Batch]):
    """``dataset[[i, j, ...]]`` -> ``(uint8 frames [B, T, H, W, 3], float32 labels [B, K])``."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        return self.data.batch(idx), self.data.labels[idx]


def _whole_batch(batch: Batch) -> Batch:
    return batch  # __getitems__ already returns the collated batch


def batch_loader(data: TrainingData, batches: Sequence[np.ndarray], *, num_workers: int = 0) -> Iterable[Batch]:
    """The batches ``batches`` (index arrays, in this order) of ``data``, decoded by ``num_workers``."""
    return DataLoader(
        TrainingBatches(data),
        batch_sampler=[b.tolist() for b in batches],
        collate_fn=_whole_batch,
        num_workers=num_workers,
    )


def model_input(
    frames: np.ndarray,
    spec: InputSpec,
    device: torch.device,
    *,
    rng: np.random.Generator | None = None,
    augmentation: AugmentConfig | None = None,
) -> Tensor:
    """Normalised float ``[B, 3, T, H, W]`` on ``device``; augmented in [0, 1] when ``augmentation``."""
    x = frames_to_tensor(frames, spec, normalize=False).to(device, non_blocking=True)
    if augmentation is not None:
        assert rng is not None
        x = augment_batch(x, rng, augmentation)
    return normalize_tensor(x, spec)
