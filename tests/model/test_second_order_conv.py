"""The convolution ATCON's passes run through: PyTorch's values, first and second derivatives, and no
gradient computed that the backward pass does not use."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from model.attribution.base import resolve_layer
from model.attribution.fused import fused_step
from model.nets import Tiny2D, Tiny3D, default_target_layer
from model.training import batchnorm_folding
from model.training.atcon import ATCONLoss, foldable_pairs, unsupervised_mode
from model.training.second_order_conv import conv_forward
from tests.model.test_atcon_gradient import SMALL, _assert_true_gradient, _inputs, _model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONVS = [
    nn.Conv2d(3, 4, 3, padding=1),
    nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
    nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    nn.Conv3d(3, 4, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
    nn.Conv3d(3, 4, 3, padding=1, padding_mode="replicate"),
]


def _input_for(conv: nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    shape = (2, conv.in_channels, 7, 7) if isinstance(conv, nn.Conv2d) else (2, conv.in_channels, 4, 7, 7)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: repr(c))
def test_values_and_derivatives_are_pytorchs(conv: nn.Module) -> None:
    conv = conv.double()
    x = _input_for(conv).requires_grad_()
    torch.testing.assert_close(conv_forward(conv, x, conv.weight, conv.bias), conv(x), rtol=0, atol=1e-12)
    params = [p for p in (conv.weight, conv.bias) if p is not None]

    def ours(x: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        return conv_forward(conv, x, p[0], p[1] if len(p) > 1 else None)

    # gradgradcheck compares the double backward with finite differences of the backward (float64)
    assert torch.autograd.gradcheck(ours, (x, *params))
    assert torch.autograd.gradgradcheck(ours, (x, *params))


class _ConvBackwardLog(TorchDispatchMode):
    """Records the output mask of every ``aten.convolution_backward`` call (which gradients it computed)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[tuple[bool, bool, bool]] = []
        self.weight_batches: list[int] = []  # the batch of each weight-gradient computation

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # torch protocol; untyped
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(tuple(bool(m) for m in args[-1]))
            if args[-1][1]:
                self.weight_batches.append(int(args[1].shape[0]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["images", "clips"])
def test_guided_pass_computes_no_weight_gradient(kind: str) -> None:
    """Guided Backprop needs input gradients only: under ATCON's convolutions no weight gradient is computed
    while the maps are built; the optimiser's backward takes each conv's weight gradient over three batches'
    worth of terms (input pass, masked pass, double backward of the guided pass), pooled into one call where
    the weight outnumbers the activations."""
    net = _model(kind)
    x = _inputs(kind)
    layer = resolve_layer(net, default_target_layer(net))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    log = _ConvBackwardLog()
    with unsupervised_mode(net, foldable_pairs(net, x)), torch.enable_grad():
        with log:
            maps = fused_step(net, x, layer, None, create_graph=True)
    assert log.masks == [(True, False, False)] * len(convs)  # one input gradient per conv, nothing else
    loss = ATCONLoss(net)(x).loss
    with _ConvBackwardLog() as outer:
        loss.backward(inputs=list(net.parameters()))  # as the trainer does
    n = x.shape[0]
    assert sum(outer.weight_batches) == 3 * n * len(convs)
    assert 3 * n in outer.weight_batches  # at least one conv's three terms in one call
    assert len(outer.weight_batches) < 3 * len(convs)
    assert maps.guided.shape == x.shape


@pytest.mark.parametrize("pool_ratio", [0, 10**9], ids=["pooled", "unpooled"])
@pytest.mark.parametrize("fold_ratio", [0, 10**9], ids=["output-affine", "folded-weights"])
@pytest.mark.parametrize("kind", ["images", "clips"])
def test_every_way_of_running_the_convolutions_has_the_true_gradient(
    kind: str, fold_ratio: int, pool_ratio: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frozen BatchNorm applied on the conv output (ratio 0) or folded into the weights (huge ratio); every
    weight's gradient terms pooled into one call or each computed on its own."""
    monkeypatch.setattr(batchnorm_folding, "_FOLD_RATIO", fold_ratio)
    monkeypatch.setattr(batchnorm_folding, "_POOL_RATIO", pool_ratio)
    net = _model(kind)
    x = _inputs(kind)
    loss = ATCONLoss(net)
    plain = _model(kind)
    reference = ATCONLoss(plain)
    reference._fold = []  # unfolded: BatchNorm as its own op
    torch.testing.assert_close(loss(x).loss, reference(x).loss, rtol=1e-10, atol=1e-12)
    _assert_true_gradient(net, lambda: loss(x).loss)


def test_tiny_nets_fold_every_batchnorm() -> None:
    for kind, net in (("images", Tiny2D(num_classes=3, widths=SMALL)), ("clips", Tiny3D(num_classes=3, widths=SMALL))):
        assert len(foldable_pairs(net.double().eval(), _inputs(kind))) == len(SMALL)


class _StdConv2d(nn.Conv2d):
    """Weight standardisation (BiT, timm's StdConv2d): a forward of its own over the same weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return torch.nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_a_convolution_with_a_forward_of_its_own_is_left_alone() -> None:
    """Neither folded nor rerouted: ATCON's passes compute the model's own function."""
    torch.manual_seed(0)
    net = nn.Sequential(_StdConv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    assert batchnorm_folding.plain_convolutions(net) == [net[3]]
    pairs = foldable_pairs(net, x)
    assert [c for c, _ in pairs] == [net[3]]  # the plain conv folds, the standardised one does not
    with torch.no_grad():
        plain = net(x)
        with unsupervised_mode(net, pairs):
            patched = net(x)
    torch.testing.assert_close(patched, plain, rtol=1e-5, atol=1e-6)


def test_unsupervised_mode_holds_several_steps() -> None:
    """Without weight sharing (the default) a block may run forward, backward and optimiser steps repeatedly,
    and every forward sees the current weights."""
    net = _model("images").float()
    x = _inputs("images").float()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with unsupervised_mode(net, foldable_pairs(net, x)):
        for _ in range(2):
            net(x).sum().backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            inside = net(x)
    with torch.no_grad():
        torch.testing.assert_close(inside, net.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_backward_that_failed_half_way_leaves_nothing_in_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weight-gradient terms collected by a backward pass that raised are not counted by the next pass."""
    monkeypatch.setattr(batchnorm_folding, "_POOL_RATIO", 0)  # every weight pooled
    net = _model("images")
    x = _inputs("images")
    params = list(net.parameters())
    expected = torch.autograd.grad(ATCONLoss(net)(x).loss, params, allow_unused=True)

    armed = {"raise": False}

    def fail_once(grad: torch.Tensor) -> torch.Tensor:
        if armed["raise"]:
            armed["raise"] = False
            raise RuntimeError("a failure half-way through the backward pass")
        return grad

    def hook_output(module: nn.Module, args: object, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(fail_once)

    handle = net.blocks[1].register_forward_hook(hook_output)
    try:
        loss = ATCONLoss(net)(x).loss
    finally:
        handle.remove()
    armed["raise"] = True
    with pytest.raises(RuntimeError, match="half-way"):
        torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    retried = torch.autograd.grad(loss, params, allow_unused=True)
    assert sum(g is not None for g in retried) > 0
    for got, want in zip(retried, expected, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_loss_is_differentiable_when_called_under_inference_mode() -> None:
    net = _model("images")
    x = _inputs("images")
    with torch.inference_mode():
        loss = ATCONLoss(net)(x).loss
    assert loss.requires_grad
    grads = torch.autograd.grad(loss, [p for p in net.parameters()], allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
