"""Device selection shared by checkpoint loading and inference.

Kept in its own module so that :mod:`model.weights` and :mod:`model.inference` can both use it
without importing each other. Re-exported as :func:`model.inference.resolve_device`.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``, failing early and clearly.

    ``"auto"`` picks ``cuda`` when a GPU is usable and ``cpu`` otherwise; ``"cpu"``, ``"cuda"``
    and ``"cuda:N"`` are taken literally. Asking for CUDA on a machine without it (or for a GPU
    index that does not exist) raises ``ValueError`` here rather than a cryptic error at the
    first tensor copy.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        key = name.strip().lower()
        if key == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(key)
        except RuntimeError as exc:
            raise ValueError(f"invalid device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device
