"""GPU-ready inference settings: reduced precision, memory format and pinned copies, resolved per device.

Why its own module: the choices depend on the device (autocast and pinned memory only pay on CUDA, where
channels-last also lets cuDNN pick its fastest 3-D kernels), and keeping them apart from
:mod:`model.inference` keeps that module about scoring. Every choice here is one that leaves a CPU score
equal to the plain float32 forward (tests/model/test_inference_accel.py states the tolerances).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["InferenceOptions", "Precision", "ResolvedOptions", "autocast", "to_channels_last"]

Precision = Literal["auto", "float32", "float16", "bfloat16"]
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class InferenceOptions:
    """How a :class:`~model.inference.ClipScorer` runs its forward passes.

    ``precision``: ``auto`` is float16 autocast on CUDA and float32 on CPU; ``float16``/``bfloat16``
    ask for that autocast dtype, which is applied **on CUDA only** (CPU always runs float32: CPU
    autocast is slower than float32 for these 3-D convolutions and would move scores for no gain).
    ``channels_last``: None (default) means on CUDA only; True/False force it (results are unchanged,
    only the memory layout differs). ``prefetch_batches``: depth of the bounded queue between the
    decode thread and the model; 0 decodes in the caller's thread (e.g. live streams, where the
    reader paces itself and must be closed from the thread that reads it).
    """

    precision: Precision = "auto"
    channels_last: bool | None = None
    prefetch_batches: int = 2

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be auto, float32, float16 or bfloat16, got {self.precision!r}")
        if self.prefetch_batches < 0:
            raise ValueError(f"prefetch_batches must be >= 0, got {self.prefetch_batches}")

    def resolve(self, device: torch.device) -> ResolvedOptions:
        """The concrete choices for ``device``."""
        cuda = device.type == "cuda"
        dtype: torch.dtype | None = None
        if cuda and self.precision != "float32":
            dtype = torch.float16 if self.precision == "auto" else _DTYPES[self.precision]
        channels_last = cuda if self.channels_last is None else bool(self.channels_last)
        return ResolvedOptions(autocast_dtype=dtype, channels_last=channels_last, pin_memory=cuda,
                               prefetch_batches=self.prefetch_batches)


@dataclass(frozen=True)
class ResolvedOptions:
    """:class:`InferenceOptions` made concrete for one device (``autocast_dtype`` None: float32)."""

    autocast_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool
    prefetch_batches: int


def _format_for(tensor: torch.Tensor) -> torch.memory_format | None:
    return {5: torch.channels_last_3d, 4: torch.channels_last}.get(tensor.dim())


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout (``channels_last_3d`` for 5-D clips); other ranks unchanged."""
    fmt = _format_for(x)
    return x if fmt is None else x.contiguous(memory_format=fmt)


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 4-D/5-D weights in place (``Module.to(memory_format=...)`` would apply one
    format to both ranks and fail on a mixed 2-D/3-D network)."""
    with torch.no_grad():
        for param in model.parameters():
            if _format_for(param) is not None:
                param.data = to_channels_last(param.data)
    return model


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` on ``device`` with ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
