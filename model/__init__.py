"""Wardwatch model library: clip classifiers, checkpoints, inference, event detection.

A plain library (tensors, arrays and dataclass configs in and out): no database, no HTTP,
no environment variables. Layering: ``server -> model -> ingest``.

Submodules are imported lazily by callers (``from model.nets import build_model``) so that
importing :mod:`model` stays cheap and does not pull in torchvision or the ingest stack.
"""

from __future__ import annotations

__all__ = ["events", "inference", "nets", "weights"]
