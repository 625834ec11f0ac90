"""Correctness tests of model.attribution on tiny hand-weighted networks.

Expected maps are computed by hand in the comments (Grad-CAM: Selvaraju et al. 2017, eq. 1-2;
Guided Backprop: Springenberg et al. 2015), so a failure here means the engine is wrong, not
that two implementations disagree. Comparisons with Captum and the torchvision video nets are in
test_attribution_torchvision.py.
"""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from model.attribution import (
    AttributionError,
    FunctionalReLUError,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    consistency,
    explain,
    similarity,
)

# ----------------------------------------------------------------------------------------------
# Tiny hand-weighted nets
# ----------------------------------------------------------------------------------------------


class CamNet(nn.Module):
    """x [N,1,2,2] -> 1x1 conv (weights 2, -1) -> GAP -> fc [[1, 3], [2, 0]] (no ReLU anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 3.0], [2.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


X_CAM = torch.tensor([[1.0, -2.0], [3.0, -4.0]]).view(1, 1, 2, 2)
# A = (2x, -x); class 0: dS/dA = (1/4, 3/4) -> cam = 2x/4 - 3x/4 = -x/4; class 1: (2/4, 0) -> x.
CAM0 = torch.tensor([[0.0, 0.5], [0.0, 1.0]])  # ReLU(-x/4)
CAM1 = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # ReLU(x)
GRAD0 = torch.full((2, 2), -0.25)  # d l0/dx = (1*2 + 3*(-1)) / 4
GRAD1 = torch.full((2, 2), 1.0)  # d l1/dx = 2*2 / 4


class PoolNet(nn.Module):
    """x [N,1,4,4] -> AvgPool2d(2) (the layer, 2x2) -> flatten -> fc [1, 2, 3, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 2.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class Clip3dNet(nn.Module):
    """Clips [N,1,2,1,2] -> identity Conv3d (the layer) -> flatten -> fc M = [[1, 3], [-2, 0]]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1, bias=False)
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0, 3.0, -2.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class FrameNet(nn.Module):
    """A 2D net run per frame on clips: identity 1x1 conv per frame, fc [1, 3], logits averaged
    over T (time folded into the batch sample-major, like model.nets)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0, 3.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        return self.fc(self.conv(frames).flatten(1)).view(n, t, -1).mean(dim=1)


W1 = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 1.0, 0.0]]
W2 = [[1.0, 1.0, -1.0], [2.0, -1.0, 2.0], [0.0, 1.0, 1.0]]
W3 = [[1.0, -2.0, -1.0], [-1.0, 1.0, 2.0]]
X_GB = torch.tensor([1.0, 2.0, -1.0]).view(1, 1, 1, 3)
# pre1 = W1 x = (-1, 3, 1) -> mask1 = (0, 1, 1); h1 = (0, 3, 1); pre2 = W2 h1 = (2, -1, 4) -> mask2 = (1, 0, 1).
# Guided, class 0: g_h2 = (1,-2,-1) -> g_pre2 = mask2*max(g,0) = (1,0,0) -> g_h1 = W2^T g = (1,1,-1)
#   -> g_pre1 = mask1*max(g,0) = (0,1,0) -> g_x = W1^T g = (0, 1, -1).
# Guided, class 1: g_h2 = (-1,1,2) -> (0,0,2) -> (0,2,2) -> (0,2,2) -> (-2, 4, -2).
# Plain gradients differ: class 0 (2, -2, 0), class 1 (-3, 4, -1).
GB0, GB1 = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([-2.0, 4.0, -2.0])
PLAIN0 = torch.tensor([2.0, -2.0, 0.0])


class TwiceReLUNet(nn.Module):
    """x (3 values) -> W1 -> relu -> W2 -> the SAME relu -> W3, like torchvision's BasicBlock."""

    def __init__(self, *, inplace: bool = False, functional: str | None = None) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 3, bias=False)
        self.l2 = nn.Linear(3, 3, bias=False)
        self.l3 = nn.Linear(3, 2, bias=False)
        self.relu = nn.ReLU(inplace=inplace)
        self.functional = functional
        with torch.no_grad():
            for layer, w in ((self.l1, W1), (self.l2, W2), (self.l3, W3)):
                layer.weight.copy_(torch.tensor(w))

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.functional == "F.relu":
            return F.relu(x)
        if self.functional == "torch.relu":
            return torch.relu(x)
        if self.functional == "method":
            return x.relu()
        if self.functional == "F.relu6":
            return F.relu6(x)
        return self.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.act(self.l2(self.act(self.l1(x.flatten(1))))))


class TinyRes(nn.Module):
    """A small torchvision-style ResNet: stem, two BasicBlocks (relu module called twice, in-place)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True))
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(self.stem(x)).mean(dim=(2, 3)))


class Tiny3d(nn.Module):
    """Conv3d-BN-ReLU x2 -> GAP -> fc, for clips."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv3d(6, 8, 3, stride=(1, 2, 2), padding=1), nn.BatchNorm3d(8), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block2(self.block1(x)).mean(dim=(2, 3, 4)))


class ReluHeadNet(nn.Module):
    """A ReLU between the Grad-CAM layer and the logits: the fused pass must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.head_relu = nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_relu(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3)))


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, 0.0, 0.5)
    return module.eval()


def _assert_clean(model: nn.Module) -> None:
    """No hook, no mode, no gradient left behind on the caller's model."""
    for name, m in model.named_modules():
        assert not m._forward_hooks, name
        assert not m._forward_pre_hooks, name
        assert not m._backward_hooks, name
        assert not m._backward_pre_hooks, name
    assert all(p.grad is None for p in model.parameters())
    assert torch._C._len_torch_function_stack() == 0


# ----------------------------------------------------------------------------------------------
# Hand-computed maps
# ----------------------------------------------------------------------------------------------


def test_grad_cam_hand_computed_per_sample_targets() -> None:
    net = CamNet().eval()
    x = X_CAM.repeat(2, 1, 1, 1)
    cam = GradCAM(net, net.conv).attribute(x, target=[0, 1])
    torch.testing.assert_close(cam, torch.stack([CAM0, CAM1]))
    torch.testing.assert_close(GradCAM(net, "conv").attribute(X_CAM), CAM0[None])  # None = argmax = 0
    raw = GradCAM(net, net.conv).attribute(X_CAM, 0, relu=False)
    torch.testing.assert_close(raw, -X_CAM[:, 0] / 4)
    _assert_clean(net)


def test_guided_and_guided_grad_cam_hand_computed() -> None:
    net = CamNet().eval()
    x = X_CAM.repeat(2, 1, 1, 1)
    gb = GuidedBackprop(net).attribute(x, torch.tensor([0, 1]))
    torch.testing.assert_close(gb[:, 0], torch.stack([GRAD0, GRAD1]))
    ggc = GuidedGradCAM(net, net.conv).attribute(x, torch.tensor([0, 1]))
    torch.testing.assert_close(ggc[:, 0], torch.stack([GRAD0 * CAM0, GRAD1 * CAM1]))
    maps = explain(net, x, [0, 1], layer=net.conv)
    assert list(maps) == ["grad_cam", "guided_backprop", "guided_grad_cam"]
    torch.testing.assert_close(maps["grad_cam"], torch.stack([CAM0, CAM1]))
    torch.testing.assert_close(maps["guided_backprop"], gb)
    torch.testing.assert_close(maps["guided_grad_cam"], ggc)
    _assert_clean(net)


def test_grad_cam_upsampling_is_bilinear() -> None:
    net = PoolNet().eval()
    x = torch.tensor([[0.0, 4.0], [8.0, 12.0]]).repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None]
    # A = [[0, 4], [8, 12]], alpha = mean(1, 2, 3, 2) = 2 -> cam = [[0, 8], [16, 24]]; bilinear x2
    # with pixel centres: each row/column (a, b) -> (a, .75a+.25b, .25a+.75b, b).
    expected = torch.tensor(
        [[0.0, 2.0, 6.0, 8.0], [4.0, 6.0, 10.0, 12.0], [12.0, 14.0, 18.0, 20.0], [16.0, 18.0, 22.0, 24.0]]
    )
    gc = GradCAM(net, net.pool)
    torch.testing.assert_close(gc.attribute(x, 0, upsample=False)[0], torch.tensor([[0.0, 8.0], [16.0, 24.0]]))
    torch.testing.assert_close(gc.attribute(x, 0)[0], expected)


def test_grad_cam_clips_3d_default_and_per_time_step() -> None:
    net = Clip3dNet().eval()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 1, 2)
    gc = GradCAM(net, net.conv)
    # G = M = [[1, 3], [-2, 0]]; default alpha = mean(M) = 0.5; per step alpha_t = (2, -1).
    torch.testing.assert_close(gc.attribute(x, 0), torch.tensor([[[[0.5, 1.0]], [[1.5, 2.0]]]]))
    per_t = gc.attribute(x, 0, per_time_step=True, relu=False)
    torch.testing.assert_close(per_t, torch.tensor([[[[2.0, 4.0]], [[-3.0, -4.0]]]]))
    torch.testing.assert_close(gc.attribute(x, 0, per_time_step=True), per_t.clamp(min=0))
    assert gc.attribute(x, 0, upsample=False).shape == (1, 2, 1, 2)


def test_grad_cam_per_frame_2d_net_on_clips() -> None:
    net = FrameNet().eval()
    x = torch.arange(1.0, 9.0).view(2, 1, 2, 1, 2)  # two clips of two 1x2 frames
    # Layer output [N*T, 1, 1, 2] = frames; G per frame = (1, 3) / T -> alpha = mean = 1 -> cam = x.
    cam = GradCAM(net, net.conv).attribute(x, 0)
    assert cam.shape == (2, 2, 1, 2)
    torch.testing.assert_close(cam, x[:, 0])
    torch.testing.assert_close(GradCAM(net, net.conv).attribute(x, 0, per_time_step=True), x[:, 0])
    maps = explain(net, x, 0, layer=net.conv, methods=("grad_cam", "guided_grad_cam", "agreement"))
    torch.testing.assert_close(maps["grad_cam"], x[:, 0])
    torch.testing.assert_close(maps["guided_grad_cam"], x * torch.tensor([0.5, 1.5]))  # (1,3)/T * cam


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_relu_module_called_twice(inplace: bool) -> None:
    net = TwiceReLUNet(inplace=inplace).eval()
    x = X_GB.repeat(2, 1, 1, 1)
    gb = GuidedBackprop(net).attribute(x, [0, 1])
    torch.testing.assert_close(gb.flatten(1), torch.stack([GB0, GB1]))
    xp = X_GB.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(xp)[0, 0], xp)  # the ordinary gradient differs
    torch.testing.assert_close(plain.flatten(), PLAIN0)
    _assert_clean(net)


def test_guided_backprop_relu6_module() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False), nn.ReLU6(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(3 * torch.tensor(W1))
        net[3].weight.copy_(torch.tensor(W3))
    # pre = 3 W1 x = (-3, 9, 3): ReLU6 passes gradient only at unit 2 (0 < 3 < 6).
    # Class 0: max((1, -2, -1), 0) = (1, 0, 0) -> masked to 0 -> guided gradient 0 (plain: (3, -3, 0)).
    # Class 1: max((-1, 1, 2), 0) -> (0, 0, 2) -> 3 W1^T (0, 0, 2) = (-6, 6, 0).
    gb = GuidedBackprop(net.eval()).attribute(X_GB.repeat(2, 1, 1, 1), [0, 1])
    torch.testing.assert_close(gb.flatten(1), torch.tensor([[0.0, 0.0, 0.0], [-6.0, 6.0, 0.0]]))
    _assert_clean(net)


@pytest.mark.parametrize("spelling", ["F.relu", "torch.relu", "method", "F.relu6"])
def test_functional_relu_refused(spelling: str) -> None:
    net = TwiceReLUNet(functional=spelling).eval()
    for call in (
        lambda: GuidedBackprop(net).attribute(X_GB, 0),
        lambda: GuidedGradCAM(net, net.l2).attribute(X_GB, 0),
        lambda: explain(net, X_GB, 0, layer=net.l2),
    ):
        with pytest.raises(FunctionalReLUError, match="outside an nn.ReLU module.*<root>"):
            call()
        _assert_clean(net)
    # Grad-CAM does not depend on ReLU rules and still works; the model runs normally afterwards.
    assert GradCAM(net, net.l2).attribute(X_GB, 0).shape == (1, 1, 3)
    assert net(X_GB).shape == (1, 2)


# ----------------------------------------------------------------------------------------------
# Fused pass
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [False, True])
def test_explain_fused_equals_separate_calls(clip: bool, caplog: pytest.LogCaptureFixture) -> None:
    net = _seeded(Tiny3d() if clip else TinyRes())
    layer = net.block2 if clip else net.layer[-1]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 8, 8) if clip else torch.randn(2, 3, 8, 8)
    with caplog.at_level(logging.INFO, logger="model.attribution"):
        maps = explain(net, x, [1, 2], layer=layer)
    assert "falling back" not in caplog.text
    torch.testing.assert_close(maps["grad_cam"], GradCAM(net, layer).attribute(x, [1, 2]))
    gb = GuidedBackprop(net).attribute(x, [1, 2])
    torch.testing.assert_close(maps["guided_backprop"], gb)
    torch.testing.assert_close(maps["guided_grad_cam"], gb * maps["grad_cam"].unsqueeze(1))
    torch.testing.assert_close(maps["guided_grad_cam"], GuidedGradCAM(net, layer).attribute(x, [1, 2]))
    _assert_clean(net)


def test_explain_falls_back_when_relu_follows_layer(caplog: pytest.LogCaptureFixture) -> None:
    net = _seeded(ReluHeadNet())
    x = torch.randn(3, 3, 8, 8)
    with caplog.at_level(logging.INFO, logger="model.attribution"):
        maps = explain(net, x, layer=net.conv2, methods=("grad_cam", "guided_grad_cam", "guided_backprop"))
    assert "head_relu" in caplog.text and "falling back" in caplog.text
    # A guided backward would have clamped the gradient at head_relu: results must not show it.
    torch.testing.assert_close(maps["grad_cam"], GradCAM(net, net.conv2).attribute(x))
    torch.testing.assert_close(maps["guided_backprop"], GuidedBackprop(net).attribute(x))
    torch.testing.assert_close(maps["guided_grad_cam"], GuidedGradCAM(net, net.conv2).attribute(x))
    # With the last ReLU itself as the layer nothing ReLU-like follows it: fused again.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="model.attribution"):
        explain(net, x, layer=net.head_relu)
    assert "falling back" not in caplog.text


# ----------------------------------------------------------------------------------------------
# Batches, safety, threads
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "clip3d", "frames"])
def test_batch_equals_one_at_a_time(kind: str) -> None:
    torch.manual_seed(2)
    if kind == "image":
        net, layer, x = _seeded(TinyRes()), "layer.1", torch.randn(3, 3, 8, 8)
    elif kind == "clip3d":
        net, layer, x = _seeded(Tiny3d()), "block2", torch.randn(3, 3, 4, 8, 8)
    else:
        net, layer = _seeded(_FramesOf(TinyRes())), "net.layer.1"
        x = torch.randn(3, 3, 2, 8, 8)
    targets = [0, 2, 1]
    batch = explain(
        net, x, targets, layer=layer, methods=("grad_cam", "guided_backprop", "guided_grad_cam", "agreement")
    )
    batch["per_step"] = GradCAM(net, layer).attribute(x, targets, per_time_step=True)
    batch["ig"] = IntegratedGradients(net).attribute(x, targets, n_steps=8)
    for i, t in enumerate(targets):
        one = explain(
            net, x[i : i + 1], t, layer=layer, methods=("grad_cam", "guided_backprop", "guided_grad_cam", "agreement")
        )
        one["per_step"] = GradCAM(net, layer).attribute(x[i : i + 1], t, per_time_step=True)
        one["ig"] = IntegratedGradients(net).attribute(x[i : i + 1], t, n_steps=8)
        for key, value in one.items():
            torch.testing.assert_close(batch[key][i : i + 1], value, rtol=1e-4, atol=1e-5, msg=key)


class _FramesOf(nn.Module):
    """Run an image net per frame on clips, averaging logits over T."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        return self.net(x.transpose(1, 2).reshape(n * t, c, h, w)).view(n, t, -1).mean(dim=1)


class _Boom(RuntimeError):
    pass


class ExplodingNet(TinyRes):
    """Raises after the target layer and its ReLUs have run (hooks are mid-flight)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layer(self.stem(x))
        raise _Boom("forward failed midway")


def test_hooks_removed_when_forward_raises() -> None:
    net = _seeded(ExplodingNet())
    x = torch.randn(1, 3, 8, 8)
    calls = [
        lambda: GradCAM(net, net.layer[-1]).attribute(x),
        lambda: GuidedBackprop(net).attribute(x),
        lambda: GuidedGradCAM(net, net.layer[-1]).attribute(x),
        lambda: explain(net, x, layer=net.layer[-1]),
        lambda: IntegratedGradients(net).attribute(x, 0, n_steps=2),
    ]
    state = copy.deepcopy(net.state_dict())
    for call in calls:
        with pytest.raises(_Boom):
            call()
        _assert_clean(net)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(type(a) is type(b) for a, b in zip(net.modules(), _seeded(ExplodingNet()).modules(), strict=True))


def test_layer_and_argument_errors() -> None:
    net = _seeded(TinyRes())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(AttributionError, match="ran 2 times"):
        GradCAM(net, net.layer[0].relu).attribute(x)  # BasicBlock calls its relu twice
    _assert_clean(net)
    with pytest.raises(AttributionError, match="not a submodule"):
        GradCAM(net, nn.Conv2d(1, 1, 1))
    with pytest.raises(AttributionError, match="out of range"):
        GradCAM(net, net.layer).attribute(x, 7)
    with pytest.raises(AttributionError, match="2 samples"):
        GuidedBackprop(net).attribute(x, [0, 1, 2])
    with pytest.raises(AttributionError, match="images"):
        GuidedBackprop(net).attribute(x[0])
    with pytest.raises(AttributionError, match="unknown method"):
        explain(net, x, layer=net.layer, methods=("grad_cam", "lime"))
    _assert_clean(net)


def test_works_under_no_grad_and_inference_mode_and_leaves_input_alone() -> None:
    net = _seeded(TinyRes())
    x = torch.randn(2, 3, 8, 8)
    reference = explain(net, x, layer=net.layer)
    with torch.no_grad():
        under_no_grad = explain(net, x, layer=net.layer)
    with torch.inference_mode():
        frozen = torch.randn(2, 3, 8, 8) * 0 + x
        under_inference = explain(net, frozen, layer=net.layer)
    for key in reference:
        torch.testing.assert_close(under_no_grad[key], reference[key])
        torch.testing.assert_close(under_inference[key], reference[key])
        assert not reference[key].requires_grad
    assert not x.requires_grad and x.grad is None
    _assert_clean(net)


def test_two_threads_explain_two_copies() -> None:
    base = _seeded(TinyRes())
    models = [base, copy.deepcopy(base)]
    torch.manual_seed(3)
    inputs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)]
    targets = [[0, 1], [3, 2]]

    def run(i: int) -> dict[str, torch.Tensor]:
        m, x, t = models[i], inputs[i], targets[i]
        out = explain(m, x, t, layer=m.layer[-1], methods=("grad_cam", "guided_backprop", "agreement"))
        out["gc"] = GradCAM(m, m.layer[-1]).attribute(x, t, per_time_step=True)
        out["gb"] = GuidedBackprop(m).attribute(x, t)
        return out

    expected = [run(0), run(1)]
    results: list[list[dict[str, torch.Tensor]]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                results[i].append(run(i))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for i in range(2):
        assert len(results[i]) == 15
        for out in results[i]:
            for key, value in out.items():
                torch.testing.assert_close(value, expected[i][key], msg=key)
        _assert_clean(models[i])


# ----------------------------------------------------------------------------------------------
# Differentiability (ATCON trains through the maps)
# ----------------------------------------------------------------------------------------------


class DiffNet(nn.Module):
    """conv -> relu -> conv (layer) -> GAP -> fc, in float64 for finite differences."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.relu(self.conv1(x))).mean(dim=(2, 3)))


def _atcon_like_loss(net: DiffNet, x: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """Map terms plus ATCON's consistency: exercises GradCAM, GuidedBackprop and the agreement."""
    cam = GradCAM(net, net.conv2).attribute(x, [0, 1], relu=False, upsample=False, create_graph=create_graph)
    gb = GuidedBackprop(net).attribute(x, [0, 1], create_graph=create_graph)
    weights = torch.linspace(-1.0, 1.0, cam[0].numel(), dtype=x.dtype).view_as(cam[0])
    agree = consistency(net, x, net.conv2, target=[0, 1], create_graph=create_graph).score
    return (cam * weights).sum() + (gb**2).sum() - agree.sum()


def test_create_graph_matches_finite_differences() -> None:
    torch.manual_seed(4)
    net = DiffNet().double().eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    loss = _atcon_like_loss(net, x, create_graph=True)
    params = [net.conv1.weight, net.conv2.weight, net.fc.weight]
    analytic = torch.autograd.grad(loss, params)
    rng = torch.Generator().manual_seed(0)
    eps = 1e-6
    for param, grad in zip(params, analytic, strict=True):
        assert grad.abs().sum() > 0
        for flat in torch.randint(0, param.numel(), (4,), generator=rng).tolist():
            with torch.no_grad():
                orig = param.view(-1)[flat].item()
                param.view(-1)[flat] = orig + eps
                up = _atcon_like_loss(net, x, create_graph=False)
                param.view(-1)[flat] = orig - eps
                down = _atcon_like_loss(net, x, create_graph=False)
                param.view(-1)[flat] = orig
            numeric = (up - down) / (2 * eps)
            torch.testing.assert_close(grad.reshape(-1)[flat], numeric, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in net.parameters())


def test_create_graph_through_masked_input_and_explain() -> None:
    torch.manual_seed(5)
    net = DiffNet().double().eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    scale = torch.ones(1, dtype=torch.float64, requires_grad=True)
    masked = x * scale  # a computed input, as ATCON's m * x: maps stay differentiable through it
    maps = explain(
        net, masked, layer=net.conv2, methods=("grad_cam", "guided_grad_cam", "agreement"), create_graph=True
    )
    total = sum(v.sum() for v in maps.values())
    (g,) = torch.autograd.grad(total, scale)
    assert torch.isfinite(g).all() and g.abs() > 0


# ----------------------------------------------------------------------------------------------
# Integrated Gradients and agreement
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_completeness(method: str) -> None:
    net = _seeded(TinyRes()).double()
    torch.manual_seed(6)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    base = torch.full_like(x, 0.1)
    attr = IntegratedGradients(net).attribute(x, [0, 3], baselines=base, n_steps=200, method=method)
    with torch.no_grad():
        delta = net(x)[[0, 1], [0, 3]] - net(base)[[0, 1], [0, 3]]
    sums = attr.sum(dim=(1, 2, 3))
    assert torch.all((sums - delta).abs() <= 0.01 * delta.abs()), (sums, delta)


def test_integrated_gradients_chunking_does_not_change_results() -> None:
    net = _seeded(TinyRes())
    x = torch.randn(3, 3, 8, 8)
    ig = IntegratedGradients(net)
    full = ig.attribute(x, [0, 1, 2], n_steps=5)
    torch.testing.assert_close(ig.attribute(x, [0, 1, 2], n_steps=5, internal_batch_size=4), full)
    torch.testing.assert_close(ig.attribute(x, [0, 1, 2], n_steps=5, internal_batch_size=2), full)
    _assert_clean(net)


def test_similarity_values() -> None:
    torch.manual_seed(7)
    a = torch.rand(3, 4, 4)
    assert torch.allclose(similarity(a, a), torch.ones(3), atol=1e-4)  # the floor in the denominator
    assert torch.allclose(similarity(a, -a), -torch.ones(3), atol=1e-4)  # sigmoid(-z) = 1 - sigmoid(z)
    flat = similarity(a, torch.zeros(3, 4, 4))  # constant map: 0, never NaN
    assert torch.equal(flat, torch.zeros(3))
    assert similarity(a, -a, "dot").allclose(torch.ones(3), atol=1e-4)  # absolute cosine
    with pytest.raises(ValueError, match="differ in shape"):
        similarity(a, torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="similarity must be one of"):
        similarity(a, a, "cosine")


def test_consistency_of_clips_is_bounded_and_per_sample() -> None:
    net = _seeded(TinyRes()).eval()
    x = torch.randn(3, 3, 8, 8)
    out = consistency(net, x, net.layer[-1])
    assert out.score.shape == (3,) and torch.all(out.score.abs() <= 1)
    torch.testing.assert_close(out.loss, -out.score)
    alone = torch.cat([consistency(net, x[i : i + 1], net.layer[-1]).score for i in range(3)])
    torch.testing.assert_close(out.score, alone, atol=1e-5, rtol=1e-4)
