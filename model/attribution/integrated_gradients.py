"""Integrated Gradients (Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks",
ICML 2017).

``IG_i(x) = (x_i - b_i) * integral_0^1 dF(b + a (x - b)) / dx_i da`` (eq. 1), approximated by a
quadrature over ``n_steps`` points on the straight path from the baseline ``b`` to ``x``
(eq. 3 is the Riemann sum). Completeness (Prop. 1): the attributions sum to
``F(x) - F(b)``, up to the quadrature error; checking it is the standard sanity test.

The default quadrature is Gauss-Legendre, as in Captum: for smooth stretches of the path it is
far more accurate per step than a Riemann sum; ReLU networks are only piecewise smooth, where
``riemann_trapezoid`` can be the better choice at high step counts.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

from model.attribution.base import Attribution, Target, grad_enabled, prepare_inputs, resolve_targets, target_scores
from model.attribution.errors import AttributionError

__all__ = ["IntegratedGradients", "quadrature"]

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of a rule with ``n_steps`` points."""
    if n_steps < 1:
        raise AttributionError(f"n_steps must be >= 1, got {n_steps}")
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (points + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise AttributionError("riemann_trapezoid needs n_steps >= 2")
        alphas = np.linspace(0.0, 1.0, n_steps)
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] *= 0.5
        return alphas, weights
    step = 1.0 / n_steps
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise AttributionError(f"unknown integration method {method!r}; expected one of {', '.join(_METHODS)}")
    return (np.arange(n_steps) + offsets[method]) * step, np.full(n_steps, step)


class IntegratedGradients(Attribution):
    """Integrated Gradients of ``model`` (plain gradients, no hooks on the model)."""

    @grad_enabled
    def attribute(
        self,
        inputs: Tensor,
        target: Target = None,
        *,
        baselines: Tensor | float | None = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        create_graph: bool = False,
    ) -> Tensor:
        """Integrated Gradients of each sample's target logit.

        Args:
            inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``.
            target: int, one int per sample, tensor ``[N]`` or ``None`` (the class predicted
                for ``inputs``, from one extra forward pass).
            baselines: ``None`` (zeros: black after normalisation is not black, choose
                consciously), a number, or a tensor broadcastable to ``inputs``.
            n_steps: quadrature points on the path.
            method: ``gausslegendre`` (default) or ``riemann_trapezoid`` / ``_left`` /
                ``_right`` / ``_middle``.
            internal_batch_size: at most this many path points per forward pass (bounds memory;
                ``None`` = all ``N * n_steps`` at once). Results do not depend on it.
            create_graph: keep the graph (ATCON's ``integrated_gradients`` fine method).

        Returns:
            Same shape as ``inputs``; sums to ``F(x) - F(baseline)`` per sample up to the
            quadrature error.
        """
        x = prepare_inputs(inputs)
        if not create_graph:
            x = x.detach()
        n = x.shape[0]
        base = self._baselines(baselines, x)
        targets: Tensor | None = None
        if target is None:
            with torch.inference_mode(False), torch.no_grad():
                logits = self.model(x)
            targets = resolve_targets(None, logits if logits.dim() == 2 else logits[:, None])
        alphas_np, weights_np = quadrature(method, n_steps)
        alphas = torch.as_tensor(alphas_np, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(weights_np, dtype=x.dtype, device=x.device)
        rows = n * n_steps
        chunk = rows if internal_batch_size is None else int(internal_batch_size)
        if chunk < 1:
            raise AttributionError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        delta = x - base
        expand = (-1,) + (1,) * (x.dim() - 1)
        parts: list[tuple[Tensor, Tensor]] = []
        for start in range(0, rows, chunk):
            # Row r is path point r // n of sample r % n (step-major, like Captum).
            index = torch.arange(start, min(start + chunk, rows), device=x.device)
            step, sample = index // n, index % n
            points = base[sample] + alphas[step].view(expand) * delta[sample]
            if not create_graph:
                points = points.detach().requires_grad_(True)
            with torch.inference_mode(False), torch.enable_grad():
                logits = self.model(points)
                if logits.dim() == 1:
                    logits = logits[:, None]
                if targets is None:  # explicit targets, validated against the real class count
                    targets = resolve_targets(target, logits.new_empty(n, logits.shape[1]))
                score = target_scores(logits, targets[sample])
            (grad,) = self._gradients(score, [points], create_graph=create_graph)
            parts.append((sample, grad * weights[step].view(expand)))
        total = torch.zeros_like(x)
        for sample, weighted in parts:
            total = total.index_add(0, sample, weighted)
        attributions = delta * total
        return attributions if create_graph else attributions.detach()

    @staticmethod
    def _baselines(baselines: Tensor | float | None, x: Tensor) -> Tensor:
        if baselines is None:
            return torch.zeros_like(x)
        if isinstance(baselines, numbers.Real):
            return torch.full_like(x, float(baselines))
        base = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
        try:
            return base.expand(x.shape)
        except RuntimeError as err:
            raise AttributionError(
                f"baselines of shape {tuple(base.shape)} do not broadcast to inputs {tuple(x.shape)}"
            ) from err
