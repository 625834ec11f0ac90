"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017).

For a target layer with activations ``A`` (``K`` channels) and class score ``y_c``:

* channel weights ``alpha_k = mean over positions of dy_c/dA_k`` (eq. 1, global average pooling
  of the gradient);
* map ``L = ReLU(sum_k alpha_k A_k)`` (eq. 2), at the layer's resolution, optionally upsampled
  to the input.

For clips the default averages the gradient over T, H and W (one weight per channel, as Captum
and pytorch-grad-cam do); ``per_time_step=True`` averages over H and W only, giving one weight
vector per time step, ATCON's video variant (see shared/ATCON.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.attribution.base import (
    LayerAttribution,
    Target,
    canonical_layer_map,
    grad_enabled,
    prepare_inputs,
    resolve_targets,
    target_scores,
    upsample_map,
)
from model.attribution.errors import AttributionError
from model.attribution.trace import Trace

__all__ = ["GradCAM", "layer_tensors"]


def layer_tensors(trace: Trace, x: Tensor) -> tuple[Tensor, Tensor]:
    """The layer's activations ``A`` and gradient ``dS/dA`` of a trace, canonical ``[N, K, *S]``.

    A zero gradient stands in when the target logit does not depend on the layer.
    """
    assert trace.activations is not None
    n, clip = x.shape[0], x.dim() == 5
    grads = trace.layer_grad
    if grads is None:
        grads = torch.zeros_like(trace.activations)
    return canonical_layer_map(trace.activations, n, clip=clip), canonical_layer_map(grads, n, clip=clip)


class GradCAM(LayerAttribution):
    """Grad-CAM maps of ``model`` read at ``layer``.

    ``GradCAM(model, layer).attribute(inputs, target)`` costs one forward pass and a backward
    pass that stops at the layer. ``layer`` is any submodule (or its dotted name) that runs
    once per forward and returns one tensor, usually the last convolutional block
    (``model.layer4[-1]`` of a ResNet or ``r3d_18``).
    """

    @grad_enabled
    def attribute(
        self,
        inputs: Tensor,
        target: Target = None,
        *,
        relu: bool = True,
        upsample: bool = True,
        per_time_step: bool = False,
        create_graph: bool = False,
    ) -> Tensor:
        """Grad-CAM of each sample for its target class.

        Args:
            inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``.
            target: class per sample: an int, one int per sample, a tensor ``[N]``, or ``None``
                for each sample's predicted (top-1) class.
            relu: keep only positive evidence (eq. 2). ATCON compares maps without it.
            upsample: resize to the input (bilinear / trilinear); else the layer's resolution.
                Values are not normalised (display code normalises).
            per_time_step: clips only: one channel-weight vector per time step.
            create_graph: keep the graph so a loss on the map can be differentiated (to the
                weights and to ``inputs`` if it requires grad); otherwise maps are detached.

        Returns:
            ``[N, H, W]`` (images) or ``[N, T, H, W]`` (clips) when ``upsample``; otherwise
            ``[N, h, w]`` or ``[N, t, h, w]`` at the layer's resolution (for a per-frame 2D net
            on clips ``t = T``).
        """
        x = prepare_inputs(inputs)
        with self._traced(x, layer=self.layer, guided=False) as trace:
            assert trace.logits is not None
            targets = resolve_targets(target, trace.logits)
            self.layer_gradient(trace, targets, create_graph=create_graph)
            cam = self.layer_map(trace, x, per_time_step=per_time_step)
        return self.finish(cam, x, relu=relu, upsample=upsample, create_graph=create_graph)

    def channel_weights(self, grads: Tensor, *, per_time_step: bool) -> Tensor:
        """``alpha`` of eq. 1 from the gradient ``[N, K, *S]``; broadcastable to it.

        The one function a Grad-CAM variant (e.g. Grad-CAM++) would override.
        """
        if grads.dim() == 5 and per_time_step:
            return grads.mean(dim=(3, 4), keepdim=True)
        return grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)

    def layer_gradient(self, trace: Trace, targets: Tensor, *, create_graph: bool) -> None:
        """Backward from the target logits to the layer only (the hook records ``dS/dA``)."""
        activations = trace.activations
        if activations is None or not activations.requires_grad:
            raise AttributionError("the target layer's output does not depend on the input")
        assert trace.logits is not None
        trace.guided, trace.capture = False, True
        self._gradients(target_scores(trace.logits, targets), [activations], create_graph=create_graph)

    def layer_map(self, trace: Trace, x: Tensor, *, per_time_step: bool) -> Tensor:
        """``sum_k alpha_k A_k`` at the layer's resolution, ``[N, *S]``, before any ReLU."""
        acts, grads = layer_tensors(trace, x)
        return self.map_from(acts, grads, per_time_step=per_time_step)

    def map_from(self, activations: Tensor, layer_grad: Tensor, *, per_time_step: bool) -> Tensor:
        """``sum_k alpha_k A_k`` from canonical ``A`` and ``dS/dA`` (both ``[N, K, *S]``): ``[N, *S]``."""
        weights = self.channel_weights(layer_grad, per_time_step=per_time_step)
        return (weights * activations).sum(dim=1)

    @staticmethod
    def finish(cam: Tensor, x: Tensor, *, relu: bool, upsample: bool, create_graph: bool) -> Tensor:
        """ReLU (eq. 2), upsampling to the input, and detaching unless a graph was asked for."""
        if relu:
            cam = cam.clamp(min=0)
        if upsample:
            cam = upsample_map(cam, x.shape[2:])
        return cam if create_graph else cam.detach()
