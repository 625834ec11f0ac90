"""Resumable training states, in the torchvision references' shape: ``{model, optimizer, scheduler, epoch, config}``.

Plus what model selection and the history need to continue exactly (best weights so far, their
score, the per-epoch rows). Written atomically after every epoch (a killed or cancelled run never
leaves a torn file) and read with ``torch.load(weights_only=True)``: a state file is data, not code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.files import atomic_path

__all__ = ["STATE_FORMAT", "TrainingState", "load_training_state", "save_training_state"]

STATE_FORMAT = "wardwatch-train-state/2"


@dataclass
class TrainingState:
    """Everything a run needs to continue after ``epoch`` as if it had never stopped."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    epoch: int
    step: int
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, Any] | None = None
    best_epoch: int = -1
    best_key: list[float] | None = None
    initial_val_macro_f1: float | None = None


def save_training_state(path: str | os.PathLike[str], state: TrainingState) -> None:
    """Atomic ``torch.save`` of ``state`` (loadable with ``weights_only=True``)."""
    with atomic_path(Path(path)) as tmp:
        torch.save({"format": STATE_FORMAT, **state.__dict__}, tmp)


def load_training_state(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> TrainingState:
    """The state saved at ``path``; ``ValueError`` if it is not a Wardwatch training state."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or payload.pop("format", None) != STATE_FORMAT:
        raise ValueError(f"{path} is not a Wardwatch training state ({STATE_FORMAT})")
    return TrainingState(**payload)
