"""The ATCON loss: every option on images and clips, numerical safety, second order, BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.attribution.agreement import (
    SIMILARITIES,
    dot_similarity,
    pearson_similarity,
    safe_zscore,
    soft_mask,
    ssim_similarity,
)
from model.nets import build_model
from model.training.atcon import (
    FINE_METHODS,
    RESOLUTION_MATCHES,
    ATCONConfig,
    ATCONLoss,
    reflect_padding,
    unsupervised_mode,
)

# Every option value once with the defaults for the rest, plus Integrated Gradients on both mask
# directions (its own code path for the masked input).
OPTIONS = sorted(
    {(rm, "pearson", "guided_backprop") for rm in RESOLUTION_MATCHES}
    | {("mask", sim, "guided_backprop") for sim in SIMILARITIES}
    | {(rm, "pearson", "integrated_gradients") for rm in ("mask", "reverse_mask")}
    | {("reverse_mask", "ssim", "guided_backprop"), ("pool", "dot", "integrated_gradients")}
)
assert {o[0] for o in OPTIONS} == set(RESOLUTION_MATCHES)
assert {o[1] for o in OPTIONS} == set(SIMILARITIES) and {o[2] for o in OPTIONS} == set(FINE_METHODS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def image_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny2d", num_classes=3).train()


@pytest.fixture(scope="module")
def clip_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny3d", num_classes=3).train()


def _param_grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize(("resolution_match", "similarity", "fine_method"), OPTIONS)
@pytest.mark.parametrize("kind", ["image", "clip"])
def test_every_option_gives_finite_loss_and_gradients(
    kind: str, resolution_match: str, similarity: str, fine_method: str, image_model: nn.Module, clip_model: nn.Module
) -> None:
    torch.manual_seed(1)
    model = image_model if kind == "image" else clip_model
    x = torch.randn(3, 3, 16, 16) if kind == "image" else torch.randn(2, 3, 4, 16, 16)
    config = ATCONConfig(resolution_match=resolution_match, similarity=similarity, fine_method=fine_method, ig_steps=2)
    out = ATCONLoss(model, config=config)(x)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.per_sample.shape == (x.shape[0],) and out.agreement.shape == (x.shape[0],)
    assert out.coarse.shape == out.fine.shape
    grads = _param_grads(model, out.loss)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # the loss does reach the weights
    assert model.training  # the model's mode is restored


def test_clip_grad_cam_keeps_one_map_per_time_step(clip_model: nn.Module) -> None:
    x = torch.randn(2, 3, 8, 24, 24)
    out = ATCONLoss(clip_model)(x)
    # tiny3d halves time once (stride 2 in the third block): 8 frames -> t = 4 maps per clip
    assert out.coarse.shape[:2] == (2, 4)
    assert out.mask is not None and out.mask.shape == (2, 8, 24, 24)


def test_targets_are_the_models_own_top_class(image_model: nn.Module) -> None:
    x = torch.randn(4, 3, 24, 24)
    out = ATCONLoss(image_model)(x)
    image_model.eval()
    with torch.no_grad():
        expected = image_model(x).argmax(dim=1)
    image_model.train()
    assert torch.equal(out.targets, expected)


@pytest.mark.parametrize("resolution_match", RESOLUTION_MATCHES)
def test_an_ignored_background_class_is_never_explained(image_model: nn.Module, resolution_match: str) -> None:
    torch.manual_seed(3)
    x = torch.randn(16, 3, 24, 24)
    image_model.eval()
    with torch.no_grad():
        logits = image_model(x)
    image_model.train()
    background = int(logits.argmax(dim=1).mode().values)  # the class most inputs are predicted as
    config = ATCONConfig(resolution_match=resolution_match, ignore_classes=(background,))
    out = ATCONLoss(image_model, config=config)(x)
    runner_up = logits.clone()
    runner_up[:, background] = float("-inf")
    assert torch.equal(out.targets, runner_up.argmax(dim=1)) and not (out.targets == background).any()
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="leaves none"):
        ATCONLoss(image_model, config=ATCONConfig(ignore_classes=(0, 1, 2)))(x)
    assert ATCONConfig(ignore_classes=[1]).ignore_classes == (1,)  # JSON lists come back as tuples


def test_batched_loss_equals_per_sample_loss(image_model: nn.Module) -> None:
    """One batched pass must give each sample the value it gets alone (no coupling, no loop)."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, 24, 24)
    loss = ATCONLoss(image_model)
    batched = loss(x).per_sample.detach()
    single = torch.stack([loss(x[i : i + 1]).per_sample.detach()[0] for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_constant_maps_give_no_nan() -> None:
    const = torch.full((2, 5, 5), 3.0, requires_grad=True)
    other = torch.randn(2, 5, 5, requires_grad=True)
    for fn in (pearson_similarity, dot_similarity, ssim_similarity):
        value = fn(const, other)
        (g_const, g_other) = torch.autograd.grad(value.sum(), [const, other])
        assert torch.isfinite(value).all(), fn.__name__
        assert torch.isfinite(g_const).all() and torch.isfinite(g_other).all(), fn.__name__
    zeros = torch.zeros(2, 4, 4, requires_grad=True)
    z = safe_zscore(zeros)
    (g,) = torch.autograd.grad(z.sum() + pearson_similarity(zeros, zeros).sum(), [zeros])
    assert torch.equal(z, torch.zeros_like(z)) and torch.isfinite(g).all()
    # a constant map whose mean does not round exactly: its float residue is not blown up to noise
    residue = safe_zscore(torch.full((1, 7, 7), 0.1))
    assert float(residue.abs().max()) < 1e-2


def test_zero_gradient_model_and_zero_input_give_finite_loss() -> None:
    torch.manual_seed(0)
    model = build_model("tiny2d", num_classes=3).train()
    with torch.no_grad():
        model.fc.weight.zero_()  # logits no longer depend on the input: all maps are zero
    inputs = (torch.randn(2, 3, 16, 16), torch.zeros(2, 3, 16, 16)) * 2
    for x, rm in zip(inputs, RESOLUTION_MATCHES, strict=True):
        out = ATCONLoss(model, config=ATCONConfig(resolution_match=rm))(x)
        assert torch.isfinite(out.loss)
        assert all(torch.isfinite(g).all() for g in _param_grads(model, out.loss))


def test_similarities_on_hand_made_maps() -> None:
    a = torch.arange(16.0).view(1, 4, 4)
    assert pearson_similarity(a, a).item() == pytest.approx(1.0, abs=1e-4)
    # sigmoid(-z) = 1 - sigmoid(z): exactly anti-correlated after the sigmoid
    assert pearson_similarity(a, -a).item() == pytest.approx(-1.0, abs=1e-4)
    # offset and scale do not matter; a sign flip does not either for the absolute cosine
    assert pearson_similarity(a, 3 * a + 7).item() == pytest.approx(1.0, abs=1e-4)
    assert dot_similarity(a, -2 * a + 1).item() == pytest.approx(1.0, abs=1e-4)
    assert ssim_similarity(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim_similarity(a, -a).item() < 0
    # clips: [N, t, h, w] maps are compared per time slice
    clip = torch.randn(2, 3, 6, 6)
    assert torch.allclose(ssim_similarity(clip, clip), torch.ones(2), atol=1e-5)


def test_soft_mask_threshold_is_half_a_std_above_the_mean() -> None:
    g = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    m = soft_mask(g, intensity=8.0, threshold=0.5)
    z = (g - g.mean()) / g.std(unbiased=False)
    assert torch.all((m > 0.5) == (z > 0.5))
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    # scale free: the same mask for a gradient map 1e-6 times smaller
    torch.testing.assert_close(soft_mask(g * 1e-6, intensity=8.0, threshold=0.5), m, atol=1e-4, rtol=0)


def test_mask_path_is_differentiated_unless_detached(image_model: nn.Module) -> None:
    """Second-order backprop: the mask (built from Guided Backprop) carries gradient."""
    torch.manual_seed(3)
    x = torch.randn(3, 3, 24, 24)
    first_conv = image_model.blocks[0].conv.weight
    full = ATCONLoss(image_model, config=ATCONConfig())(x).loss
    detached = ATCONLoss(image_model, config=ATCONConfig(detach_mask=True))(x).loss
    assert full.item() == pytest.approx(detached.item(), abs=1e-6)  # same value ...
    (g_full,) = torch.autograd.grad(full, [first_conv])
    (g_det,) = torch.autograd.grad(detached, [first_conv])
    assert not torch.allclose(g_full, g_det)  # ... different gradient: the mask path counts
    assert float(g_det.abs().sum()) > 0  # both CAMs reach the first layer without the mask


def test_batchnorm_is_frozen_during_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model("tiny2d", num_classes=3).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    seen: list[bool] = []
    hooks = [bn.register_forward_pre_hook(lambda mod, args: seen.append(mod.training)) for bn in bns]
    try:
        out = ATCONLoss(model)(torch.randn(4, 3, 24, 24) * 3 + 1)
        out.loss.backward()
    finally:
        for h in hooks:
            h.remove()
    assert seen and not any(seen)  # every BatchNorm call ran in eval mode
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True))
    assert all(bn.training for bn in bns)  # restored afterwards
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for bn in bns:
            for t in (bn.running_mean, bn.weight, bn.bias):
                t.copy_(torch.randn_like(t))
            bn.running_var.uniform_(0.5, 2.0)
    with unsupervised_mode(model):
        assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.Dropout))
        frozen = model(x)  # BatchNorm as an explicit affine map (cheaper double backward) ...
    model.eval()
    torch.testing.assert_close(frozen, model(x))  # ... is exactly the eval-mode network
    model.train()


def test_reflect_padding_switches_padding_and_keeps_the_weights() -> None:
    torch.manual_seed(0)
    model2d = build_model("tiny2d", num_classes=2).eval()
    x = torch.randn(1, 3, 24, 24)
    before = model2d(x)
    keys = list(model2d.state_dict())
    reflect_padding(model2d)
    assert {m.padding_mode for m in model2d.modules() if isinstance(m, nn.Conv2d)} == {"reflect"}
    assert list(model2d.state_dict()) == keys
    assert not torch.allclose(model2d(x), before)
    model3d = reflect_padding(build_model("tiny3d", num_classes=2))
    assert {m.padding_mode for m in model3d.modules() if isinstance(m, nn.Conv3d)} == {"replicate"}
    out = ATCONLoss(model3d)(torch.randn(1, 3, 4, 24, 24))
    assert torch.isfinite(out.loss)


def test_config_rejects_unknown_option_names() -> None:
    with pytest.raises(ValueError, match="resolution_match"):
        ATCONConfig(resolution_match="bilinear")
    with pytest.raises(ValueError, match="similarity"):
        ATCONConfig(similarity="cosine")
    with pytest.raises(ValueError, match="fine_method"):
        ATCONConfig(fine_method="saliency")


def test_fused_step_matches_separate_calls(image_model: nn.Module, clip_model: nn.Module) -> None:
    """ATCON's input pass is the engine's public fused step: the same maps as separate calls."""
    from model.attribution import GradCAM, GuidedBackprop, fused_step
    from model.nets import default_target_layer

    for model, x in ((image_model, torch.randn(3, 3, 16, 16)), (clip_model, torch.randn(2, 3, 4, 16, 16))):
        layer = default_target_layer(model)
        model.eval()
        try:
            maps = fused_step(model, x, layer, None)
            cam = GradCAM(model, layer).attribute(x, maps.targets, relu=False, upsample=False, per_time_step=True)
            guided = GuidedBackprop(model).attribute(x, maps.targets)
        finally:
            model.train()
        assert maps.fused
        torch.testing.assert_close(maps.cam(per_time_step=True), cam)
        torch.testing.assert_close(maps.guided, guided)


class _FunctionalReLUNet(nn.Module):
    """A net whose second non-linearity is ``F.relu``: Guided Backprop cannot see it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("resolution_match", RESOLUTION_MATCHES)
def test_functional_relu_is_refused_not_silently_unguided(resolution_match: str) -> None:
    """The loss checks the model on its first guided pass (later passes skip the costly watch).

    (Integrated Gradients uses plain gradients, so it has no such restriction.)
    """
    from model.attribution import FunctionalReLUError

    model = _FunctionalReLUNet()
    loss = ATCONLoss(model, layer=model.conv2, config=ATCONConfig(resolution_match=resolution_match))
    with pytest.raises(FunctionalReLUError, match="outside an nn.ReLU module"):
        loss(torch.randn(2, 3, 8, 8))


def test_the_relu_watch_runs_once_per_loss(image_model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.attribution import trace as trace_module

    calls: list[bool] = []
    original = trace_module._traced_forward

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("guided")) and bool(kwargs.get("watch_functional_relu", True)))
        return original(*args, **kwargs)

    monkeypatch.setattr(trace_module, "_traced_forward", spy)
    loss = ATCONLoss(image_model)
    for _ in range(3):
        loss(torch.randn(2, 3, 16, 16)).loss.backward()
    assert sum(calls) == 1 and len(calls) == 6
