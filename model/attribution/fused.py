"""The fused step: Grad-CAM and Guided Backprop from one forward and (where exact) one backward pass.

Why it can work: Guided Backprop changes only the backward rule of ReLUs. If no ReLU lies
between the Grad-CAM layer and the logits (a ResNet: last block -> average pool -> linear), the
guided backward pass carries exactly the plain gradient ``dS/dA`` through the layer on its way
to the input, so one backward pass yields both the Grad-CAM weights and the guided input
gradient (Selvaraju et al. 2017 compute Guided Grad-CAM from these two).

The condition is checked on every call, not assumed per architecture: :mod:`.trace` records
which ``nn.ReLU`` modules ran after the layer during this forward pass (functional ReLUs are
refused outright). Any ReLU after the layer could sit on the path to the logits, so the engine
then falls back, with a log line, to two backward passes over the same forward graph: first
to the layer with the guided rule switched off (cheap: only the head), then to the input with
it on. Results are identical either way; only the cost differs.

This is the one place that switches the trace's rules between backward passes; every pass runs
inside :func:`~model.attribution.trace.traced`, so once :func:`fused_step` returns, no hook is
left on the graph and a loss on its maps (``create_graph=True``, ATCON) differentiates with the
ordinary rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor, nn

from model.attribution.base import TargetRule, grad_enabled, prepare_inputs, resolve_targets, target_scores
from model.attribution.errors import AttributionError
from model.attribution.grad_cam import GradCAM, layer_tensors
from model.attribution.trace import Trace, traced

__all__ = ["FusedMaps", "fused_step"]

logger = logging.getLogger(__name__)


@dataclass
class FusedMaps:
    """Output of :func:`fused_step`: everything Grad-CAM and Guided Backprop need, no hooks attached.

    Attributes:
        inputs: the input the maps explain (requires grad), ``[N, C, H, W]`` / ``[N, C, T, H, W]``.
        targets: class per sample, ``int64 [N]``.
        activations: the layer's output ``A``, canonical ``[N, K, *S]``.
        layer_grad: ``dS/dA`` (plain gradient), ``[N, K, *S]``.
        guided: Guided Backprop gradient, same shape as the inputs.
        fused: True when one backward pass sufficed.
        cam_method: the channel-weight rule (plain :class:`GradCAM` unless a variant was given).
    """

    inputs: Tensor
    targets: Tensor
    activations: Tensor
    layer_grad: Tensor
    guided: Tensor
    fused: bool
    cam_method: GradCAM

    def cam(self, *, per_time_step: bool) -> Tensor:
        """Grad-CAM ``sum_k alpha_k A_k`` at the layer's resolution, ``[N, *S]``, no ReLU."""
        return self.cam_method.map_from(self.activations, self.layer_grad, per_time_step=per_time_step)


@grad_enabled
def fused_step(
    model: nn.Module,
    inputs: Tensor,
    layer: nn.Module,
    target: TargetRule = None,
    *,
    create_graph: bool = False,
    cam_method: GradCAM | None = None,
    watch_functional_relu: bool = True,
) -> FusedMaps:
    """Grad-CAM's ingredients and Guided Backprop of ``inputs`` from one instrumented forward pass.

    Args:
        model: the classifier, in eval mode for batch-independent maps.
        inputs: images or clips; a tensor that already requires grad (ATCON's masked input) is
            used as is, so maps stay differentiable through it.
        layer: Grad-CAM's layer (a module of ``model``).
        target: class per sample, ``None`` for the top-1 class, or a rule on the logits.
        create_graph: keep every result differentiable (to the weights and to ``inputs``).
        cam_method: the channel-weight rule (default: plain :class:`GradCAM`).
        watch_functional_relu: see :func:`~model.attribution.trace.traced`.
    """
    cam_method = cam_method or GradCAM(model, layer)
    x = prepare_inputs(inputs)
    with traced(model, x, layer=layer, guided=True, watch_functional_relu=watch_functional_relu) as trace:
        assert trace.logits is not None
        targets = resolve_targets(target, trace.logits)
        if trace.activations is None or not trace.activations.requires_grad:
            raise AttributionError("the target layer's output does not depend on the input")
        guided, fused = _backward_passes(trace, cam_method, x, targets, create_graph=create_graph)
        activations, layer_grad = layer_tensors(trace, x)
    if not create_graph:
        activations, layer_grad, guided = activations.detach(), layer_grad.detach(), guided.detach()
    return FusedMaps(
        inputs=x,
        targets=targets,
        activations=activations,
        layer_grad=layer_grad,
        guided=guided,
        fused=fused,
        cam_method=cam_method,
    )


def _backward_passes(
    trace: Trace, cam_method: GradCAM, x: Tensor, targets: Tensor, *, create_graph: bool
) -> tuple[Tensor, bool]:
    """Fill ``trace.layer_grad`` with the plain ``dS/dA`` and return ``(guided input gradient, fused)``."""
    assert trace.logits is not None and trace.activations is not None
    score = target_scores(trace.logits, targets)
    if not trace.relus_after_layer:
        trace.guided, trace.capture = True, True
        (guided,) = cam_method._gradients(score, [x], create_graph=create_graph)
        return guided, True
    logger.info(
        "Guided Grad-CAM: nn.ReLU module(s) %s run after the target layer %s, so the guided backward "
        "would alter Grad-CAM's gradients; falling back to a separate backward pass for Grad-CAM",
        ", ".join(sorted(set(trace.relus_after_layer))),
        type(cam_method.layer).__name__,
    )
    trace.guided, trace.capture = False, True
    cam_method._gradients(score, [trace.activations], create_graph=create_graph, retain_graph=True)
    trace.guided, trace.capture = True, False
    (guided,) = cam_method._gradients(score, [x], create_graph=create_graph)
    return guided, False
