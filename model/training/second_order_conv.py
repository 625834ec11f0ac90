"""Convolutions whose double backward runs on the first-order kernels, for ATCON's second-order passes.

Why: ATCON's loss is a function of Guided Backprop's input gradient, so the optimiser's backward runs the
*double backward* of every convolution: for ``y = conv(x, W)`` and the input gradient
``gI = conv_input_grad(gO, W)``, it needs ``d/dgO = conv(ggI, W)`` and ``d/dW = weight_grad(gO, ggI)``.
PyTorch's generic formula (``aten::_convolution_double_backward``) computes the weight term as a
convolution with batch and channels swapped and ``gO`` as the kernel, and computes every term whether the
backward needs it or not (both convolutions run even when only ``d/dW`` is asked for). On CPU (oneDNN) that
costs up to 1.9x the two first-order kernels that give the same numbers (``python benchmarks/training.py
--double-backward``).

Here a convolution is an :class:`torch.autograd.Function` whose input gradient is itself a Function with
an explicit backward: ``conv`` for the output-gradient term and ``convolution_backward`` (the ordinary
weight-gradient kernel) for the weight term. Each backward computes only the gradients that the running
backward pass will use (``torch._C._will_engine_execute_node``, the check PyTorch's own nodes make through
their output masks): the guided pass asks for input gradients only. All operations inside are
differentiable, so higher orders still work; the finite-difference tests in
``tests/model/test_atcon_gradient.py`` check the result in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

__all__ = ["WeightGradPool", "conv_forward", "pooled_weight"]


@dataclass(frozen=True)
class _Geometry:
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def output_padding(self) -> tuple[int, ...]:
        return (0,) * len(self.stride)

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return torch.convolution(
            x, weight, bias, self.stride, self.padding, self.dilation, False, self.output_padding, self.groups
        )

    def backward(
        self, grad_out: Tensor, x: Tensor, weight: Tensor, mask: tuple[bool, bool, bool]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """``aten::convolution_backward``: (input, weight, bias) gradients for the ``True`` entries of ``mask``."""
        bias_sizes = [weight.shape[0]] if mask[2] else None
        grads = torch.ops.aten.convolution_backward(
            grad_out, x, weight, bias_sizes, self.stride, self.padding, self.dilation, False,
            self.output_padding, self.groups, list(mask),
        )  # fmt: skip
        return tuple(g if m else None for g, m in zip(grads, mask, strict=True))  # type: ignore[return-value]


def _needed(ctx: Any, count: int) -> list[bool]:
    """Which of the first ``count`` inputs of this node the running backward pass will use.

    An input needs a gradient when it requires one and its node lies on the path to what the backward
    was asked for (``autograd.grad(..., inputs)`` / ``backward(inputs=...)``); without a list of inputs,
    every node that requires a gradient runs.

    PyTorch cannot say whether a leaf's node will run during ``autograd.grad``, so the model's tensors reach
    these nodes through an alias (:func:`_non_leaf`); a leaf that still does (a caller's ``grad_outputs``) is
    assumed needed.
    """
    needed = list(ctx.needs_input_grad[:count])
    for i, (node, _) in enumerate(ctx.next_functions[:count]):
        if needed[i]:
            needed[i] = node is not None and _will_run(node)
    return needed


def _will_run(node: Any) -> bool:
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError as exc:
        if "leaf node" in str(exc):  # a leaf captured by autograd.grad: PyTorch cannot say; compute it
            return True
        raise


class _Conv(Function):
    """``y = conv(x, W) + b`` with the backward below."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, geometry: _Geometry,
                pool: WeightGradPool | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.pool = geometry, pool
        return geometry.conv(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        geometry: _Geometry = ctx.geometry
        need_x, need_w, need_b = _needed(ctx, 3)
        grad_x = grad_w = grad_b = None
        if not torch.is_grad_enabled():  # a plain backward: the first-order kernel, at most one call
            if need_w and ctx.pool is not None:  # the weight's pool computes this term with the others
                ctx.pool.add(geometry, grad_out, x)
                need_w = False
            if need_x or need_w or need_b:
                grad_x, grad_w, grad_b = geometry.backward(grad_out, x, weight, (need_x, need_w, need_b))
            return grad_x, grad_w, grad_b, None, None
        # create_graph: the input gradient will be differentiated (Guided Backprop in ATCON's loss)
        grad_x = _ConvInputGrad.apply(grad_out, x.detach(), weight, geometry, ctx.pool) if need_x else None
        if need_w or need_b:
            _, grad_w, grad_b = geometry.backward(grad_out, x, weight, (False, need_w, need_b))
        return grad_x, grad_w, grad_b, None, None


class _ConvInputGrad(Function):
    """``gI = conv_input_grad(gO, W)`` (linear in each), differentiable with the first-order kernels."""

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, geometry: _Geometry,
                pool: WeightGradPool | None) -> Tensor:
        ctx.save_for_backward(grad_out, x, weight)
        ctx.geometry, ctx.pool = geometry, pool
        grad_x, _, _ = geometry.backward(grad_out, x, weight, (True, False, False))
        assert grad_x is not None
        return grad_x

    @staticmethod
    def backward(ctx: Any, grad_grad_x: Tensor) -> tuple[Tensor | None, ...]:
        grad_out, x, weight = ctx.saved_tensors
        geometry: _Geometry = ctx.geometry
        need_grad_out, _, need_w = _needed(ctx, 3)
        # gI is conv's input gradient, i.e. the transpose of conv(., W) applied to gO: its adjoint in gO is
        # conv(., W) itself, and in W it is conv's weight gradient with ggI in the input's place.
        d_grad_out = geometry.conv(grad_grad_x, weight) if need_grad_out else None
        d_weight = None
        if need_w and ctx.pool is not None and not torch.is_grad_enabled():
            ctx.pool.add(geometry, grad_out, grad_grad_x)
        elif need_w:
            d_weight = geometry.backward(grad_out, grad_grad_x, weight, (False, True, False))[1]
        return d_grad_out, None, d_weight, None, None


class WeightGradPool:
    """The weight-gradient terms of one convolution in one backward pass, summed by one kernel call.

    Why: in ATCON's backward a convolution's weight receives three terms, ``wgrad(δ, a)`` of the input pass,
    ``wgrad(δ', a')`` of the masked pass and ``wgrad(gO, ggI)`` of the guided pass's double backward; their sum
    is one ``wgrad`` of the three concatenated along the batch. oneDNN's weight gradient is inefficient on small
    feature maps with many channels (ResNet's last stages: 4x4 or 1x7x7 positions, 256-512 channels), where one
    call on three times the batch costs about what one call on the batch costs (``benchmarks/training.py``).
    The terms are collected by the convolutions' backwards (which then return no weight gradient) and summed
    by :class:`_PooledWeight`, whose backward runs after all of them: the engine runs a node once every node
    using its output is done.

    Terms are kept per backward pass (``torch._C._current_graph_task_id``): a pass that raised half-way (an
    out-of-memory error caught and retried, a hook) leaves terms that the next pass over the same graph must not
    count, so a flush takes its own pass's terms and drops every other.
    """

    def __init__(self) -> None:
        self._terms: list[tuple[int, _Geometry, Tensor, Tensor]] = []

    def add(self, geometry: _Geometry, grad_out: Tensor, inputs: Tensor) -> None:
        self._terms.append((torch._C._current_graph_task_id(), geometry, grad_out, inputs))

    def flush(self, weight: Tensor) -> Tensor | None:
        """The summed weight gradient of this backward pass's terms (None without any); forgets every term."""
        task = torch._C._current_graph_task_id()
        terms = [(g, go, x) for t, g, go, x in self._terms if t == task]
        self._terms = []
        if not terms:
            return None
        geometry = terms[0][0]
        if any(t[0] != geometry or t[1].shape[1:] != terms[0][1].shape[1:] or t[2].shape[1:] != terms[0][2].shape[1:]
               for t in terms):  # not one batch: one call each
            return torch.stack([g.backward(go, x, weight, (False, True, False))[1] for g, go, x in terms]).sum(0)
        grad_out = torch.cat([t[1] for t in terms]) if len(terms) > 1 else terms[0][1]
        inputs = torch.cat([t[2] for t in terms]) if len(terms) > 1 else terms[0][2]
        return geometry.backward(grad_out, inputs, weight, (False, True, False))[1]


class _PooledWeight(Function):
    """``W`` as it is; its backward returns the :class:`WeightGradPool`'s sum (plus any gradient that reached it
    the ordinary way, e.g. in a ``create_graph`` backward, where nothing is pooled)."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, pool: WeightGradPool) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(weight)
        ctx.pool = pool
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None]:
        (weight,) = ctx.saved_tensors
        pooled = ctx.pool.flush(weight)
        if pooled is None or grad is None:
            return (grad if pooled is None else pooled), None
        return grad + pooled, None


def pooled_weight(weight: Tensor) -> tuple[Tensor, WeightGradPool | None]:
    """``weight`` routed through a new :class:`WeightGradPool` (pass both to :func:`conv_forward` for every use of
    the convolution within one loss), or ``(weight, None)`` when it needs no gradient."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return weight, None
    pool = WeightGradPool()
    return _PooledWeight.apply(weight, pool), pool


def _non_leaf(t: Tensor | None) -> Tensor | None:
    """``t`` itself, or an alias of it with its own autograd node when ``t`` is a leaf that requires grad."""
    return torch.ops.aten.alias(t) if t is not None and t.requires_grad and t.is_leaf else t


def conv_forward(conv: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None,
                 pool: WeightGradPool | None = None) -> Tensor:
    """``conv``'s forward on ``x`` with the given (possibly folded) ``weight`` and ``bias``.

    Same values as ``conv._conv_forward(x, weight, bias)``; a ``Conv2d``/``Conv3d`` with explicit padding
    (any ``padding_mode``) goes through the Functions above; anything else (string padding such as ``"same"``,
    or a call under autocast, which casts PyTorch's own convolution only) through PyTorch's own convolution.
    ``pool``: the :class:`WeightGradPool` of ``weight`` (as returned with it by :func:`pooled_weight`), or None
    to compute each weight-gradient term on its own.
    """
    if (isinstance(conv.padding, str) or not isinstance(conv, nn.Conv2d | nn.Conv3d)
            or torch.is_autocast_enabled(x.device.type)):  # autocast casts PyTorch's own conv, not these Functions
        return conv._conv_forward(x, weight, bias)
    padding = tuple(int(p) for p in conv.padding)
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = (0,) * len(padding)
    geometry = _Geometry(
        stride=tuple(int(s) for s in conv.stride),
        padding=padding,
        dilation=tuple(int(d) for d in conv.dilation),
        groups=int(conv.groups),
    )
    return _Conv.apply(_non_leaf(x), _non_leaf(weight), _non_leaf(bias), geometry, pool)
