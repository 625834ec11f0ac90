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

from model.training.second_order_conv import WeightGradPool, conv_forward, pooled_weight

__all__ = [
    "ConvBN",
    "conv_bn_pairs",
    "folded_batchnorm",
    "frozen_scale_shift",
    "plain_convolutions",
    "randomise_batchnorms",
]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
ConvBN = tuple[nn.Module, nn.Module]


def plain_convolutions(model: nn.Module) -> list[nn.Module]:
    """The ``Conv2d`` / ``Conv3d`` modules of ``model`` that compute exactly PyTorch's convolution.

    A subclass with a forward of its own (weight standardisation, "same" padding done by hand, fake
    quantisation) computes something else from its weight: it is never folded nor rerouted.
    """
    return [m for m in model.modules() if isinstance(m, _CONVS) and _is_plain(type(m))]


def _is_plain(kind: type) -> bool:
    base = nn.Conv2d if issubclass(kind, nn.Conv2d) else nn.Conv3d
    return kind.forward is base.forward and kind._conv_forward is base._conv_forward


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

    handles = [m.register_forward_hook(after_conv) for m in plain_convolutions(model)]
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


class _FoldedConv:
    """The forward of one conv with its frozen BatchNorm applied, for the length of one ``folded_batchnorm`` block.

    Two exact ways to apply ``s, t`` to ``conv(x, W) + bias``, chosen per call by which touches fewer numbers:

    * **into the weights**: ``conv(x, W * s) + (bias * s + t)``. The folded weight is computed once per block
      and shared by every forward in it (ATCON's input and masked passes), so its cost, a multiply over ``W``
      forward and two multiplies and a reduction over ``W`` backward, is paid once per loss, not per pass.
    * **on the output**: ``conv(x, W) * s + t``, element-wise over the activations, in every pass that goes
      through it (two forwards, the guided input-gradient pass and the backward of each): about four times as
      many passes, each over the activation instead of the weight.

    A late ResNet stage at a small batch has far fewer activations than weights (ResNet-18 ``layer4`` on
    112 px clips: 65 K activations, 2.4 M weights), an early one the reverse; the cheaper side is taken when
    ``numel(W) <= 4 * numel(output)``. Both give the unfolded network's values and gradients.

    With ``share`` (one loss per block, as :class:`~model.training.atcon.ATCONLoss` makes it), every use of the
    conv within the block shares one weight tensor, and where the weight outnumbers the activations that tensor
    goes through a :class:`~model.training.second_order_conv.WeightGradPool`, which sums the weight-gradient
    terms of all those uses in one kernel call. Without it every forward makes its own (folded) weight, so a
    block may hold any number of forwards, backwards and optimiser steps.
    """

    def __init__(self, conv: nn.Module, bn: nn.Module | None, *, share: bool) -> None:
        self.conv, self.bn, self.share = conv, bn, share
        self._shared: dict[tuple[bool, bool, bool], tuple[Tensor, Tensor | None, WeightGradPool | None]] = {}

    def _weight_for(self, fold: bool, pool: bool) -> tuple[Tensor, Tensor | None, WeightGradPool | None]:
        """The (folded) weight and bias; with ``share``, made once per grad mode and shared by every forward."""
        key = (fold, pool and self.share, torch.is_grad_enabled())
        if self.share and key in self._shared:
            return self._shared[key]
        conv = self.conv
        weight, bias = conv.weight, conv.bias
        if fold:
            assert self.bn is not None
            scale, shift = frozen_scale_shift(self.bn)
            weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
            bias = shift if bias is None else bias * scale + shift
        if not self.share:
            return weight, bias, None
        weight, pool_of_weight = pooled_weight(weight) if pool else (weight, None)
        self._shared[key] = (weight, bias, pool_of_weight)
        return self._shared[key]

    def __call__(self, x: Tensor) -> Tensor:
        conv = self.conv
        outputs = _output_numel(conv, x)
        fold = self.bn is not None and conv.weight.numel() <= _FOLD_RATIO * outputs
        weight, bias, pool = self._weight_for(fold, conv.weight.numel() >= _POOL_RATIO * (x.numel() + outputs))
        out = conv_forward(conv, x, weight, bias, pool)
        if self.bn is None or fold:
            return out
        scale, shift = frozen_scale_shift(self.bn)
        shape = (1, -1) + (1,) * (out.dim() - 2)
        return out * scale.view(shape) + shift.view(shape)


_FOLD_RATIO = 4
#: pool a weight's gradient terms when it has at least as many elements as one call's input and output together
_POOL_RATIO = 1


def _output_numel(conv: nn.Module, x: Tensor) -> int:
    """Elements of ``conv(x)`` (an estimate from the strides: padding and dilation barely change it)."""
    spatial = 1
    for size, stride in zip(x.shape[2:], conv.stride, strict=False):
        spatial *= max(1, -(-int(size) // int(stride)))
    return int(x.shape[0]) * int(conv.out_channels) * spatial


def _folded_forward(conv: nn.Module, bn: nn.Module | None, share: bool):  # noqa: ANN202 - a bound forward
    folded = _FoldedConv(conv, bn, share=share)

    def forward(self: nn.Module, x: Tensor) -> Tensor:
        return folded(x)

    return types.MethodType(forward, conv)


def _identity(self: nn.Module, x: Tensor) -> Tensor:
    return x


@contextlib.contextmanager
def folded_batchnorm(pairs: Sequence[ConvBN], convs: Sequence[nn.Module] = (), *,
                     share_weights: bool = False) -> Iterator[None]:
    """Within the block each pair's conv computes ``bn(conv(x))`` in one op and the bn passes through.

    Every conv of ``pairs`` and ``convs`` (convolutions without a BatchNorm to fold; only plain ``Conv2d`` /
    ``Conv3d``, see :func:`plain_convolutions`) runs through
    :func:`~model.training.second_order_conv.conv_forward`, whose double backward is cheaper. The BatchNorms
    must be in eval mode (frozen statistics) for the whole block. ``share_weights``: the block is one loss
    (one graph, differentiated once): its forwards share each conv's weight and pool its gradient terms
    (see :class:`_FoldedConv`); the weights must not change within the block.
    """
    paired = {id(c) for c, _ in pairs}
    plain = [c for c in convs if id(c) not in paired]
    saved = [(m, m.__dict__.get("forward", _ABSENT)) for pair in pairs for m in pair]
    saved += [(c, c.__dict__.get("forward", _ABSENT)) for c in plain]
    try:
        for conv, bn in pairs:
            conv.forward = _folded_forward(conv, bn, share_weights)
            bn.forward = types.MethodType(_identity, bn)
        for conv in plain:
            conv.forward = _folded_forward(conv, None, share_weights)
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
