"""Grad-CAM and Guided Backprop from one forward and (where exact) one backward pass.

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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor, nn

from model.attribution.base import Target, resolve_targets, target_scores
from model.attribution.errors import AttributionError
from model.attribution.grad_cam import GradCAM
from model.attribution.trace import traced_forward

__all__ = ["FusedMaps", "fused_maps"]

logger = logging.getLogger(__name__)


@dataclass
class FusedMaps:
    """Output of :func:`fused_maps`.

    Attributes:
        targets: class per sample, ``int64 [N]``.
        cam: Grad-CAM ``sum_k alpha_k A_k`` at the layer's resolution, ``[N, *S]``, no ReLU.
        guided: Guided Backprop gradient, same shape as the inputs.
        fused: True when one backward pass sufficed.
    """

    targets: Tensor
    cam: Tensor
    guided: Tensor
    fused: bool


def fused_maps(
    model: nn.Module,
    x: Tensor,
    layer: nn.Module,
    target: Target,
    *,
    per_time_step: bool,
    create_graph: bool,
    cam_method: GradCAM | None = None,
) -> FusedMaps:
    """Grad-CAM (layer resolution, pre-ReLU) and Guided Backprop of ``x`` from one forward pass.

    ``x`` must already require grad (see :func:`~model.attribution.base.prepare_inputs`).
    ``cam_method`` supplies the channel-weight rule (default: plain :class:`GradCAM`).
    """
    cam_method = cam_method or GradCAM(model, layer)
    trace = traced_forward(model, x, layer=layer, guided=True)
    assert trace.logits is not None
    targets = resolve_targets(target, trace.logits)
    if trace.activations is None or not trace.activations.requires_grad:
        raise AttributionError("the target layer's output does not depend on the input")
    score = target_scores(trace.logits, targets)
    fused = not trace.relus_after_layer
    if fused:
        trace.guided, trace.capture = True, True
        (guided,) = cam_method._gradients(score, [x], create_graph=create_graph)
    else:
        names = ", ".join(sorted(set(trace.relus_after_layer)))
        logger.info(
            "Guided Grad-CAM of %s: nn.ReLU module(s) %s run after the target layer %s, so the guided "
            "backward would alter Grad-CAM's gradients; falling back to a separate backward pass for "
            "Grad-CAM",
            type(model).__name__,
            names,
            type(layer).__name__,
        )
        trace.guided, trace.capture = False, True
        cam_method._gradients(score, [trace.activations], create_graph=create_graph, retain_graph=True)
        trace.guided, trace.capture = True, False
        (guided,) = cam_method._gradients(score, [x], create_graph=create_graph)
    cam = cam_method.layer_map(trace, x, per_time_step=per_time_step)
    if not create_graph:
        cam, guided = cam.detach(), guided.detach()
    return FusedMaps(targets=targets, cam=cam, guided=guided, fused=fused)
