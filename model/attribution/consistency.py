"""ATCON's attention consistency: how well Grad-CAM and Guided Backprop agree on one prediction.

Source: Mirzazadeh et al., "ATCON: Attention Consistency for Vision Models" (WACV 2023),
specified step by step in ``shared/ATCON.md``. Shapes: N samples, C colour channels, T frames;
images ``[N, C, H, W]``, clips ``[N, C, T, H, W]``; Grad-CAM's layer has resolution
``S = (h, w)`` (images) or ``(t, h, w)`` (clips; ``t = T`` for a per-frame 2D net).

Default configuration (``resolution_match="mask"``), for each input ``x``:

1. ``c`` = the class to explain: the given target, else ``argmax f(x)`` (no label; optionally
   among the classes not in ``ignore_classes``, e.g. a background class);
2. ``cam(x) = sum_k w_k A_k`` with ``w = mean_{h,w} dy_c/dA`` (Grad-CAM, Selvaraju et al. 2017,
   eq. 1-2, *without* ReLU or upsampling; one weight vector per time step for clips);
3. ``g = sum_channels |GB(x)|``, Guided Backprop (Springenberg et al. 2015) of ``y_c``;
4. ``m = sigmoid(k * (zscore(g) - tau))`` with ``tau = 0.5`` (in std units, ATCON.md's fix of the
   released code's threshold on raw magnitudes) and slope ``k = mask_intensity``; ``x' = m * x``;
5. ``cam' = cam(x')`` for the same class ``c``;
6. ``score = pearson(sigmoid(zscore(cam)), sigmoid(zscore(cam')))``; ATCON's loss is ``-score``.

Why this lives in the attribution engine and not in the trainer: the agreement the server stores
beside each flagged event (and shows a clinician as a hint of how far to trust the flag) must be
the very function that ATCON fine-tuning maximises; :func:`consistency` is that one function. The
trainer calls it with ``create_graph=True`` and back-propagates ``loss``; the worker calls it on
the maps it already computed for display (``maps=``), which costs one more forward and a backward
pass to the layer for the masked input.

With ``create_graph=True`` every map keeps its autograd graph, so the loss reaches the weights
through both CAMs *and* through the mask (second-order backprop; ``detach_mask`` is the ablation
that cuts the mask path), and that gradient is the true derivative of the loss: every pass runs
inside :func:`~model.attribution.trace.traced`, whose guided-ReLU hooks are gone before the caller
differentiates (tested against central finite differences in float64). Everything is batched:
one forward/backward per pass for the whole batch, never a per-sample loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.attribution.agreement import (
    SIMILARITIES,
    apply_mask,
    pool_to,
    reduce_channels,
    similarity,
    similarity_loss,
    soft_mask,
)
from model.attribution.base import (
    TargetRule,
    grad_enabled,
    prepare_inputs,
    resolve_targets,
    target_scores,
    upsample_map,
)
from model.attribution.fused import FusedMaps, fused_step
from model.attribution.grad_cam import GradCAM
from model.attribution.integrated_gradients import IntegratedGradients
from model.attribution.trace import traced

__all__ = [
    "FINE_METHODS",
    "RESOLUTION_MATCHES",
    "ATCONConfig",
    "Consistency",
    "consistency",
    "top_class",
]

RESOLUTION_MATCHES: tuple[str, ...] = ("mask", "upsample", "pool", "reverse_mask")
FINE_METHODS: tuple[str, ...] = ("guided_backprop", "integrated_gradients")


@dataclass(frozen=True)
class ATCONConfig:
    """Options of ATCON's consistency (names in words, as ATCON.md asks).

    Attributes:
        resolution_match: how the coarse (Grad-CAM) and fine (Guided Backprop) maps are brought to
            one resolution: ``mask`` (default: fine map -> soft mask -> Grad-CAM of the masked
            input, compared with Grad-CAM of the input), ``upsample`` (Grad-CAM upsampled to the
            fine map), ``pool`` (fine map average-pooled to Grad-CAM's resolution),
            ``reverse_mask`` (mask from the upsampled Grad-CAM, fine maps of input and masked
            input compared).
        similarity: ``pearson`` (default; on sigmoid of z-scores), ``dot`` (absolute cosine of
            the z-scored maps) or ``ssim`` (SSIM of the sigmoid of the z-scored maps, 11x11
            Gaussian window, sigma 1.5; loss 1 - SSIM).
        fine_method: ``guided_backprop`` (default) or ``integrated_gradients`` (zero baseline,
            ``ig_steps`` points; the paper's ablation).
        mask_intensity: slope ``k`` of the soft mask ``sigmoid(k * (z - tau))``.
        mask_threshold: ``tau`` in standard deviations of the map (0.5 = mean + std/2).
        detach_mask: ablation: no gradient through the mask (first-order in the mask path).
        per_time_step: clips: one Grad-CAM weight vector per time step (ATCON's video variant).
        ig_steps: quadrature points for ``integrated_gradients``.
        ignore_classes: class indices never explained when no target is given; each input's
            target is its top class among the others. Our addition for single-label data with a
            background class (Wardwatch's ``none`` clips, most of continuous video): the Grad-CAM
            of "nothing is happening" has no object to point at. Default ``()``: plain top-1.
    """

    resolution_match: str = "mask"
    similarity: str = "pearson"
    fine_method: str = "guided_backprop"
    mask_intensity: float = 8.0
    mask_threshold: float = 0.5
    detach_mask: bool = False
    per_time_step: bool = True
    ig_steps: int = 4
    ignore_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore_classes", tuple(int(c) for c in self.ignore_classes))
        for name, allowed in (
            ("resolution_match", RESOLUTION_MATCHES),
            ("similarity", SIMILARITIES),
            ("fine_method", FINE_METHODS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not self.mask_intensity > 0:
            raise ValueError("mask_intensity must be > 0")
        if self.ig_steps < 1:
            raise ValueError("ig_steps must be >= 1")
        if any(c < 0 for c in self.ignore_classes):
            raise ValueError("ignore_classes must hold class indices >= 0")


@dataclass
class Consistency:
    """Result of :func:`consistency` (differentiable where ``create_graph=True`` was asked).

    Attributes:
        score: ``[N]`` agreement in the similarity's own units (Pearson / cosine in [-1, 1];
            SSIM at most 1); higher = the two explanations agree more.
        loss: ``[N]`` ATCON's per-sample loss for it (``-score``, or ``1 - score`` for SSIM).
        targets: ``int64 [N]`` the explained class per sample.
        coarse: first compared map (e.g. ``cam(x)``, ``[N, *S]``).
        fine: second compared map (e.g. ``cam(x')``).
        mask: soft mask ``[N, H, W]`` / ``[N, T, H, W]`` (``None`` without one).
    """

    score: Tensor
    loss: Tensor
    targets: Tensor
    coarse: Tensor
    fine: Tensor
    mask: Tensor | None


def top_class(logits: Tensor, ignore_classes: tuple[int, ...] = ()) -> Tensor:
    """``int64 [N]``: each row's argmax over the classes not in ``ignore_classes`` (no label used).

    Raises ``ValueError`` when every class would be ignored.
    """
    scores = logits.detach()
    if ignore_classes:
        k = scores.shape[1]
        keep = torch.ones(k, dtype=torch.bool, device=scores.device)
        keep[[c for c in ignore_classes if c < k]] = False
        if not bool(keep.any()):
            raise ValueError(f"ignore_classes {ignore_classes} leaves none of the {k} classes to explain")
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.argmax(dim=1)


@grad_enabled
def consistency(
    model: nn.Module,
    inputs: Tensor,
    layer: nn.Module,
    config: ATCONConfig | None = None,
    *,
    target: TargetRule = None,
    create_graph: bool = False,
    maps: FusedMaps | None = None,
    watch_functional_relu: bool = True,
) -> Consistency:
    """ATCON's consistency of Grad-CAM (read at ``layer``) and the fine map on ``inputs``.

    Args:
        model: the classifier, in eval mode (BatchNorm statistics frozen: samples must not
            interact, the engine explains a batch with one backward pass of the summed logits).
        inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``, normalised float.
        layer: Grad-CAM's layer (a module of ``model``).
        config: the options (default: ATCON.md's default configuration).
        target: class per sample; ``None`` explains the top class outside ``ignore_classes``.
        create_graph: keep every map differentiable (ATCON's loss); otherwise results are detached.
        maps: the input's fused maps when the caller already has them (guided_backprop only).
        watch_functional_relu: see :func:`~model.attribution.trace.traced`.
    """
    cfg = config or ATCONConfig()
    steps = _Steps(model, layer, cfg, create_graph=create_graph, watch=watch_functional_relu)
    rule: TargetRule = target if target is not None else (lambda logits: top_class(logits, cfg.ignore_classes))
    x, targets, cam, fine = steps.input_maps(inputs, rule, maps)
    mask: Tensor | None = None
    if cfg.resolution_match == "reverse_mask":
        mask = steps.mask(upsample_map(cam, fine.shape[1:]))
        a, b = fine, steps.fine(apply_mask(x, mask), targets)
    elif cfg.resolution_match == "mask":
        mask = steps.mask(fine)
        a, b = cam, steps.grad_cam(apply_mask(x, mask), targets)
    elif cfg.resolution_match == "upsample":
        a, b = upsample_map(cam, fine.shape[1:]), fine
    else:  # pool
        a, b = cam, pool_to(fine, tuple(cam.shape[1:]))
    score = similarity(a, b, cfg.similarity)
    result = Consistency(
        score=score, loss=similarity_loss(score, cfg.similarity), targets=targets, coarse=a, fine=b, mask=mask
    )
    if not create_graph:
        for name in ("score", "loss", "coarse", "fine", "mask"):
            value = getattr(result, name)
            if value is not None:
                setattr(result, name, value.detach())
    return result


class _Steps:
    """The passes of the recipe for one call, sharing the model, layer and options."""

    def __init__(self, model: nn.Module, layer: nn.Module, cfg: ATCONConfig, *, create_graph: bool, watch: bool):
        self.model, self.layer, self.cfg = model, layer, cfg
        self.create_graph, self.watch = create_graph, watch
        self.cam_method = GradCAM(model, layer)

    def input_maps(
        self, inputs: Tensor, rule: TargetRule, maps: FusedMaps | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, targets [N], cam(x) [N, *S], one-channel fine map of x)``; Grad-CAM and Guided
        Backprop share one forward (and usually one backward) pass."""
        if self.cfg.fine_method == "guided_backprop":
            if maps is None:
                maps = fused_step(
                    self.model,
                    inputs,
                    self.layer,
                    rule,
                    create_graph=self.create_graph,
                    watch_functional_relu=self.watch,
                )
            return (
                maps.inputs,
                maps.targets,
                maps.cam(per_time_step=self.cfg.per_time_step),
                reduce_channels(maps.guided),
            )
        x = prepare_inputs(inputs)
        targets, cam = self._grad_cam(x, rule)
        return x, targets, cam, self.fine(x, targets)

    def grad_cam(self, x: Tensor, targets: Tensor) -> Tensor:
        """Grad-CAM of ``x`` for ``targets`` at the layer's resolution, no ReLU: ``[N, *S]``."""
        return self._grad_cam(x, targets)[1]

    def _grad_cam(self, inputs: Tensor, rule: TargetRule) -> tuple[Tensor, Tensor]:
        x = prepare_inputs(inputs)
        with traced(self.model, x, layer=self.layer, guided=False) as trace:
            assert trace.logits is not None
            targets = resolve_targets(rule, trace.logits)
            self.cam_method.layer_gradient(trace, targets, create_graph=self.create_graph)
            return targets, self.cam_method.layer_map(trace, x, per_time_step=self.cfg.per_time_step)

    def fine(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """One-channel fine map ``sum_c |attr|`` of ``inputs`` for ``targets``."""
        if self.cfg.fine_method == "integrated_gradients":
            attr = IntegratedGradients(self.model).attribute(
                inputs, targets, n_steps=self.cfg.ig_steps, create_graph=self.create_graph
            )
            return reduce_channels(attr)
        x = prepare_inputs(inputs)
        with traced(self.model, x, guided=True, watch_functional_relu=self.watch) as trace:
            assert trace.logits is not None
            score = target_scores(trace.logits, targets)
            (grad,) = self.cam_method._gradients(score, [x], create_graph=self.create_graph)
        return reduce_channels(grad)

    def mask(self, fine: Tensor) -> Tensor:
        mask = soft_mask(fine, intensity=self.cfg.mask_intensity, threshold=self.cfg.mask_threshold)
        return mask.detach() if self.cfg.detach_mask else mask
