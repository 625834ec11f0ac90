"""Errors raised by the attribution engine, so callers can tell a bad model from a bad call."""

from __future__ import annotations

__all__ = ["AttributionError", "FunctionalReLUError"]


class AttributionError(ValueError):
    """The model, layer, inputs or target cannot be explained as asked (message says why)."""


class FunctionalReLUError(AttributionError):
    """Guided Backprop met a ReLU called as a function (``F.relu``, ``torch.relu``, ``x.relu()``).

    Its guided rule is installed on ``nn.ReLU`` modules; a functional call would silently keep
    the plain gradient, so the engine refuses instead of returning a wrong map.
    """
