"""model.attribution against Captum (test-only dependency) and on torchvision's video ResNets.

Randomly initialised networks at small input sizes keep this fast on a CPU; correctness of the
maps does not depend on trained weights.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.video import mc3_18, r2plus1d_18, r3d_18

from model.attribution import GradCAM, GuidedBackprop, GuidedGradCAM, IntegratedGradients, explain

captum_attr = pytest.importorskip("captum.attr")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.detach().flatten(), b.detach().flatten()]).double())[0, 1])


@pytest.fixture(scope="module")
def resnet() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=6).eval()
    x = torch.randn(2, 3, 64, 64)
    return model, x, torch.tensor([1, 4])


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_grad_cam_matches_captum_layer_grad_cam(resnet) -> None:
    model, x, target = resnet
    layer = model.layer4[-1]
    ours = GradCAM(model, layer).attribute(x, target, relu=False, upsample=False)
    theirs = captum_attr.LayerGradCam(model, layer).attribute(x, target=target)
    assert theirs.shape == (2, 1, 2, 2) and ours.shape == (2, 2, 2)
    assert _corr(ours, theirs) >= 0.999
    torch.testing.assert_close(ours, theirs[:, 0], rtol=1e-4, atol=1e-6)
    assert _no_hooks(model)


def test_guided_backprop_matches_captum(resnet) -> None:
    model, x, target = resnet
    ours = GuidedBackprop(model).attribute(x, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum's notes about hooks and requires_grad
        theirs = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=target)
    assert _corr(ours, theirs) >= 0.999
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    # The fused pass gives the same guided gradient.
    fused = explain(model, x, target, layer=model.layer4[-1], methods=("guided_backprop",))
    torch.testing.assert_close(fused["guided_backprop"], ours)
    assert _no_hooks(model)


def test_integrated_gradients_matches_captum(resnet) -> None:
    model, x, target = resnet
    ours = IntegratedGradients(model).attribute(x, target, n_steps=16, internal_batch_size=12)
    theirs = captum_attr.IntegratedGradients(model).attribute(x, target=target, n_steps=16)
    assert _corr(ours, theirs) >= 0.999
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)


def test_resnet18_explain_is_fused_and_consistent(resnet, caplog: pytest.LogCaptureFixture) -> None:
    model, x, target = resnet
    layer = model.layer4[-1]
    with caplog.at_level(logging.INFO, logger="model.attribution"):
        maps = explain(model, x, target, layer=layer, methods=("grad_cam", "guided_grad_cam", "agreement"))
    assert "falling back" not in caplog.text
    torch.testing.assert_close(maps["grad_cam"], GradCAM(model, layer).attribute(x, target))
    torch.testing.assert_close(maps["guided_grad_cam"], GuidedGradCAM(model, layer).attribute(x, target))
    assert maps["grad_cam"].shape == (2, 64, 64) and maps["agreement"].shape == (2,)


@pytest.mark.parametrize("build", [r3d_18, mc3_18, r2plus1d_18], ids=lambda b: b.__name__)
def test_video_resnets_smoke(build, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = build(weights=None, num_classes=3).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    layer = model.layer4[-1]
    with caplog.at_level(logging.INFO, logger="model.attribution"):
        maps = explain(
            model, x, [0, 2], layer=layer, methods=("grad_cam", "guided_backprop", "guided_grad_cam", "agreement")
        )
    assert "falling back" not in caplog.text  # nothing but pooling and fc after layer4
    assert maps["grad_cam"].shape == (2, 4, 32, 32)
    assert maps["guided_backprop"].shape == maps["guided_grad_cam"].shape == x.shape
    assert all(torch.isfinite(v).all() for v in maps.values())
    assert maps["guided_backprop"].abs().sum() > 0
    per_step = GradCAM(model, layer).attribute(x, [0, 2], per_time_step=True, upsample=False)
    assert per_step.dim() == 4 and per_step.shape[0] == 2
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, [0, 2]), maps["guided_backprop"])
    assert _no_hooks(model)
