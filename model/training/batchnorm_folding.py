"""Frozen BatchNorm folded into the convolution before it, for the ATCON passes.

Why: ATCON runs two forward passes, a backward pass with ``create_graph=True`` and the optimiser's
backward through all of it (a double backward). A frozen (eval-mode) BatchNorm is the per-channel
affine map ``y = x * s + t`` with ``s = w / sqrt(var + eps)`` and ``t = b - mean * s``; as a
separate op it costs an element-wise multiply and add over every activation in each of those
passes, plus reductions for its parameters' gradients (~10 % of a ResNet-18 ATCON step). Applied
to the weights instead, ``conv(x, W) * s + t = conv(x, W * s) + (bias * s + t)``, it costs a
multiply over the (small) weight tensor. Values and gradients (to ``W``, ``w``, ``b``) are those of
the unfolded eval-mode network: the folding is an identity of the function, not an approximation.

Pairs are found by watching one forward pass (a BatchNorm whose input *is* a convolution's output
tensor); :func:`model.training.atcon.foldable_pairs` then checks the folding once against the
unfolded network, on a copy whose BatchNorms are randomised (at initialisation a BatchNorm is
nearly the identity and would hide a convolution output that something else also reads). A model
where it does not hold is left unfolded. Everything is undone on exit: the caller's model is never
left modified (an instance ``forward`` it had before is put back).
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvBN", "conv_bn_pairs", "folded_batchnorm", "frozen_scale_shift", "randomise_batchnorms"]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
ConvBN = tuple[nn.Module, nn.Module]


def conv_bn_pairs(model: nn.Module, inputs: Tensor) -> list[ConvBN]:
    """``(conv, bn)`` pairs where ``bn`` consumes ``conv``'s output directly, seen on one forward."""
    outputs: dict[int, tuple[nn.Module, Tensor]] = {}
    pairs: list[ConvBN] = []

    def after_conv(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if isinstance(output, Tensor):
            outputs[id(output)] = (module, output)  # keeps the tensor alive: ids stay unique

    def before_bn(module: nn.Module, args: tuple[object, ...]) -> None:
        found = outputs.get(id(args[0])) if args else None
        if found is not None and found[1] is args[0] and module.track_running_stats:
            pairs.append((found[0], module))

    handles = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, _CONVS)]
    handles += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, _NORMS)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    convs = [c for c, _ in pairs]
    norms = [b for _, b in pairs]
    # a conv or a BatchNorm that ran twice (shared module) cannot be folded for one of its calls only
    return [(c, b) for c, b in pairs if convs.count(c) == 1 and norms.count(b) == 1]


def frozen_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of a frozen BatchNorm ``y = x * s + t`` per channel (differentiable in its weight and bias)."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    return scale, shift


def _folded_forward(conv: nn.Module, bn: nn.Module):  # noqa: ANN202 - a bound forward
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        scale, shift = frozen_scale_shift(bn)
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        return conv._conv_forward(x, weight, bias)

    return types.MethodType(forward, conv)


def _identity(self: nn.Module, x: Tensor) -> Tensor:
    return x


@contextlib.contextmanager
def folded_batchnorm(pairs: Sequence[ConvBN]) -> Iterator[None]:
    """Within the block each pair's conv computes ``bn(conv(x))`` in one op and the bn passes through.

    The BatchNorms must be in eval mode (frozen statistics) for the whole block.
    """
    saved = [(m, m.__dict__.get("forward", _ABSENT)) for pair in pairs for m in pair]
    try:
        for conv, bn in pairs:
            conv.forward = _folded_forward(conv, bn)
            bn.forward = types.MethodType(_identity, bn)
        yield
    finally:
        for module, previous in saved:
            if previous is _ABSENT:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = previous


_ABSENT = object()


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm of ``model`` (a throwaway copy) statistics and weights far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _NORMS) and m.track_running_stats:
                for t, low, high in ((m.running_mean, -1.0, 1.0), (m.running_var, 0.3, 3.0)):
                    t.copy_(torch.empty(t.shape).uniform_(low, high, generator=gen).to(t))
                if m.affine:
                    m.weight.copy_(torch.empty(m.weight.shape).uniform_(0.3, 3.0, generator=gen).to(m.weight))
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-1.0, 1.0, generator=gen).to(m.bias))
