"""Architectures: output shapes on clips/images, target layers, no functional ReLU surprises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.nets import ARCHITECTURES, build_model, default_target_layer, is_video_arch

K = 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _tiny_clip(arch: str) -> torch.Tensor:
    # ResNets downsample 32x; r3d_18 also halves T three times. Keep inputs just big enough.
    size = 32 if arch in ("r3d_18", "resnet50", "resnet18") else 40
    return torch.randn(2, 3, 4, size, size)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_maps_clips_to_logits(arch: str) -> None:
    model = build_model(arch, num_classes=K).eval()
    with torch.no_grad():
        out = model(_tiny_clip(arch))
    assert out.shape == (2, K)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["tiny2d", "resnet18", "resnet50"])
def test_2d_nets_accept_images_and_average_logits_over_time(arch: str) -> None:
    model = build_model(arch, num_classes=K).eval()
    clip = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        images = model(clip[:, :, 0])
        per_frame = torch.stack([model(clip[:, :, t]) for t in range(2)], dim=1)
        on_clip = model(clip)
    assert images.shape == (2, K)
    torch.testing.assert_close(on_clip, per_frame.mean(dim=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["tiny3d", "r3d_18"])
def test_3d_nets_refuse_images(arch: str) -> None:
    model = build_model(arch, num_classes=K).eval()
    with pytest.raises((ValueError, RuntimeError)):
        model(torch.randn(1, 3, 32, 32))


def test_is_video_arch_and_unknown_arch() -> None:
    assert is_video_arch("tiny3d") and is_video_arch("r3d_18")
    assert not is_video_arch("resnet50") and not is_video_arch("tiny2d")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg16", num_classes=K)
    with pytest.raises(ValueError):
        build_model("tiny3d", num_classes=0)


def _last_conv_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features entering the global pool, captured independently of default_target_layer."""
    pool = model.avgpool
    seen: list[torch.Tensor] = []
    handle = pool.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_target_layer_outputs_the_last_conv_features(arch: str) -> None:
    model = build_model(arch, num_classes=K).eval()
    layer = default_target_layer(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = _tiny_clip(arch)[:1]
    try:
        with torch.no_grad():
            pooled_input = _last_conv_output(model, x)
    finally:
        handle.remove()
    assert len(captured) == 1, "target layer must run exactly once per forward"
    torch.testing.assert_close(captured[0], pooled_input)
    expected_dims = 5 if is_video_arch(arch) else 4
    assert captured[0].dim() == expected_dims


def test_default_target_layer_rejects_unknown_models() -> None:
    with pytest.raises(TypeError):
        default_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_relus_are_out_of_place_modules(arch: str) -> None:
    model = build_model(arch, num_classes=K)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


@pytest.mark.parametrize("arch", ["tiny3d", "tiny2d"])
def test_tiny_nets_stay_tiny(arch: str) -> None:
    model = build_model(arch, num_classes=K)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert nbytes < 1_000_000
