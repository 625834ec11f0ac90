"""The ATCON loss's parameter gradient is the true derivative of the loss (float64 central differences).

Why this file exists: a green suite once hid a wrong ATCON gradient. The guided-ReLU hooks of the
Guided Backprop pass stayed on the autograd graph, switched on, so the optimiser's backward was
clamped at every ReLU (cosine 0.78 with the true gradient on tiny3d). Nothing compared the
gradient with the derivative. Here every option is compared, along several random unit directions
of all parameters, with ``(L(w + h v) - L(w - h v)) / 2h``.
"""

from __future__ import annotations

import gc
import importlib
import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from model.attribution import ATCONConfig, GradCAM, GuidedBackprop, explain, live_traces
from model.attribution import trace as trace_module
from model.attribution.agreement import SIMILARITIES
from model.nets import Tiny2D, Tiny3D
from model.training.atcon import FINE_METHODS, RESOLUTION_MATCHES, ATCONLoss, reflect_padding

# The package exports the function ``consistency``, which shadows its module's name as an attribute.
consistency_module = importlib.import_module("model.attribution.consistency")

# float64: truncation ~h^2, rounding ~1e-16/h, both ~1e-9 relative here. Two steps, because the
# networks are piecewise smooth: a ReLU input that crosses zero within +-h makes *that* difference
# quotient wrong (seen once in 100 directions at h=1e-6), while a wrong gradient is wrong at every h.
STEPS = (1e-6, 1e-7)
TOLERANCE = 1e-5
DIRECTIONS = 3
SMALL = (4, 6, 8, 8)  # tiny widths: the test is about calculus, not capacity

ALL_OPTIONS = list(itertools.product(RESOLUTION_MATCHES, SIMILARITIES, FINE_METHODS, (False, True)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Tiny2D(num_classes=3, widths=SMALL) if kind == "images" else Tiny3D(num_classes=3, widths=SMALL)
    net = net.double().train()  # train mode: the loss must freeze BatchNorm itself
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def _inputs(kind: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, 24, 24) if kind == "images" else (2, 3, 6, 24, 24)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _central_difference(
    params: list[torch.Tensor], v: list[torch.Tensor], loss_of: Callable[[], torch.Tensor], h: float
) -> float:
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(sign * h * vi)
        values.append(float(loss_of().detach()))
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.sub_(sign * h * vi)
    return (values[0] - values[1]) / (2 * h)


def directional_errors(net: nn.Module, loss_of: Callable[[], torch.Tensor]) -> list[tuple[float, float, float]]:
    """``(finite difference, autograd, relative error)`` along ``DIRECTIONS`` random unit directions."""
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_of(), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    out = []
    for d in range(DIRECTIONS):
        gen = torch.Generator().manual_seed(100 + d)
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        norm = torch.sqrt(sum((vi * vi).sum() for vi in v))
        v = [vi / norm for vi in v]
        analytic = float(sum((g * vi).sum() for g, vi in zip(grads, v, strict=True)))
        numeric = min((_central_difference(params, v, loss_of, h) for h in STEPS), key=lambda q: abs(q - analytic))
        scale = max(abs(numeric), abs(analytic), 1e-12)
        out.append((numeric, analytic, abs(numeric - analytic) / scale))
    return out


def _assert_true_gradient(net: nn.Module, loss_of: Callable[[], torch.Tensor]) -> None:
    rows = directional_errors(net, loss_of)
    assert any(abs(a) > 1e-8 for _, a, _ in rows), f"gradient vanishes along every direction: {rows}"
    worst = max(r for _, _, r in rows)
    assert worst < TOLERANCE, f"autograd disagrees with central differences: {rows}"


@pytest.mark.parametrize("kind", ["images", "clips"])
@pytest.mark.parametrize(("resolution_match", "similarity", "fine_method", "detach_mask"), ALL_OPTIONS)
def test_atcon_gradient_matches_finite_differences(
    kind: str,
    resolution_match: str,
    similarity: str,
    fine_method: str,
    detach_mask: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = _model(kind)
    x = _inputs(kind)
    cfg = ATCONConfig(
        resolution_match=resolution_match, similarity=similarity, fine_method=fine_method, detach_mask=detach_mask
    )
    loss = ATCONLoss(net, config=cfg)
    if detach_mask and resolution_match in ("mask", "reverse_mask"):
        # The ablation differentiates the loss with the mask held constant: so must the
        # finite differences, i.e. the mask of the unperturbed weights in every evaluation.
        fixed = loss(x).mask
        assert fixed is not None
        monkeypatch.setattr(consistency_module, "soft_mask", lambda fine, **_: fixed)
    _assert_true_gradient(net, lambda: loss(x).loss)


@pytest.mark.parametrize("kind", ["images", "clips"])
def test_atcon_gradient_when_relus_follow_the_layer(kind: str) -> None:
    """The engine's non-fused path (a separate plain backward for Grad-CAM), and ignore_classes."""
    net = _model(kind)
    loss = ATCONLoss(net, layer=net.blocks[-2], config=ATCONConfig(ignore_classes=(0,)))
    x = _inputs(kind)
    _assert_true_gradient(net, lambda: loss(x).loss)


def test_atcon_gradient_with_reflect_padding() -> None:
    net = reflect_padding(_model("clips"))
    loss = ATCONLoss(net)
    x = _inputs("clips")
    _assert_true_gradient(net, lambda: loss(x).loss)


def test_default_gradient_is_not_the_guided_one() -> None:
    """The failure this file guards against, measured: the old gradient was off by ~30-70 %."""
    net = _model("clips")
    loss = ATCONLoss(net)
    x = _inputs("clips")
    rows = directional_errors(net, lambda: loss(x).loss)
    assert loss._fold is not None and len(loss._fold) == len(SMALL)  # the folded BatchNorm path was differentiated
    assert max(r for _, _, r in rows) < TOLERANCE
    assert min(abs(a) for _, a, _ in rows) > 1e-6  # a real, non-zero derivative was compared


@pytest.mark.parametrize("kind", ["images", "clips"])
def test_explain_maps_in_a_loss_have_the_true_gradient(kind: str) -> None:
    """``explain(..., create_graph=True)``: every map (and the agreement) used in one loss."""
    net = _model(kind).eval()
    x = _inputs(kind)
    methods = ("grad_cam", "guided_backprop", "guided_grad_cam", "agreement", "integrated_gradients")

    def loss_of() -> torch.Tensor:
        maps = explain(net, x, target=[1, 2], layer=net.blocks[-1], methods=methods, create_graph=True, ig_steps=3)
        weights = {"grad_cam": 0.7, "guided_backprop": 1.3, "guided_grad_cam": -0.9, "integrated_gradients": 0.4}
        total = -3.0 * maps["agreement"].sum()
        for name, w in weights.items():
            total = (
                total
                + w * (maps[name] * torch.linspace(-1, 1, maps[name].numel(), dtype=x.dtype).view_as(maps[name])).sum()
            )
        return total

    _assert_true_gradient(net, loss_of)


def test_separate_maps_in_a_loss_have_the_true_gradient() -> None:
    """GradCAM and GuidedBackprop called on their own with create_graph=True, then combined."""
    net = _model("images").eval()
    x = _inputs("images")

    def loss_of() -> torch.Tensor:
        cam = GradCAM(net, net.blocks[-1]).attribute(x, [0, 1], relu=False, upsample=False, create_graph=True)
        gb = GuidedBackprop(net).attribute(x, [0, 1], create_graph=True)
        return (cam.pow(2).mean() * gb.abs().mean()).log()

    _assert_true_gradient(net, loss_of)


def _module_hooks(net: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in net.modules()
    )


def test_no_hook_and_no_trace_outlive_100_losses() -> None:
    net = _model("clips", seed=3)
    loss = ATCONLoss(net)
    x = _inputs("clips", seed=4).float()
    net.float()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    for _ in range(100):
        opt.zero_grad()
        loss(x).loss.backward()
        opt.step()
    net.eval()
    for _ in range(20):  # the explanation paths the worker and the evaluation use
        explain(net, x, layer=net.blocks[-1], methods=("grad_cam", "guided_backprop", "agreement"))
        GradCAM(net, net.blocks[-1]).attribute(x)
        GuidedBackprop(net).attribute(x, create_graph=True).sum()
    gc.collect()
    assert live_traces() == []
    # Not even a closed trace survives: nothing (no graph, no hook) refers to one any more.
    assert len(trace_module._LIVE) == 0
    assert _module_hooks(net) == 0


def test_explain_agreement_is_the_atcon_score() -> None:
    """One agreement: the score stored beside an event is what the ATCON loss maximises."""
    net = _model("clips", seed=5).eval()
    x = _inputs("clips", seed=6)
    out = ATCONLoss(net)(x)
    stored = explain(net, x, target=out.targets, layer=net.blocks[-1], methods=("agreement",))["agreement"]
    torch.testing.assert_close(stored, out.agreement, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(stored, -out.per_sample.detach(), rtol=1e-9, atol=1e-12)


def test_batchnorm_folding_is_exact_and_undone() -> None:
    """Folded BatchNorms give the unfolded network's logits; the model is restored afterwards.

    (That the folded loss has the true gradient is what the finite-difference tests above check: their
    BatchNorms have non-trivial statistics, and they run folded, see the default-gradient test.)"""
    from model.training.batchnorm_folding import conv_bn_pairs, folded_batchnorm

    for kind in ("images", "clips"):
        net = _model(kind).eval()
        x = _inputs(kind)
        pairs = conv_bn_pairs(net, x)
        assert len(pairs) == len(SMALL)  # every ConvBlock: conv -> bn
        plain = net(x)
        with folded_batchnorm(pairs):
            folded = net(x)
        torch.testing.assert_close(folded, plain, rtol=1e-12, atol=1e-12)
        assert all("forward" not in m.__dict__ for m in net.modules())  # nothing left patched
        torch.testing.assert_close(net(x), plain, rtol=0, atol=0)


def test_folding_is_refused_when_a_conv_output_has_another_reader() -> None:
    from model.training.atcon import foldable_pairs

    class Skip(nn.Module):  # conv -> bn, but the raw conv output is also added back
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.relu, self.fc = (
                nn.Conv2d(3, 3, 3, padding=1),
                nn.BatchNorm2d(3),
                nn.ReLU(),
                nn.Linear(3, 2),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            return self.fc(self.relu(self.bn(h) + h).mean(dim=(2, 3)))

    # at initialisation BatchNorm is nearly the identity: only the randomised probe reveals the second reader
    assert foldable_pairs(Skip().eval(), torch.randn(2, 3, 8, 8)) == []
