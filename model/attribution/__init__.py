"""Attribution engine: batched, differentiable explanations of image and clip classifiers.

Public surface (shapes: images ``[N, C, H, W]``, clips ``[N, C, T, H, W]``)::

    from model.attribution import GradCAM, GuidedBackprop, GuidedGradCAM, IntegratedGradients
    from model.attribution import explain, agreement

    GradCAM(model, layer).attribute(x, target)          # [N, H, W] / [N, T, H, W]
    GuidedBackprop(model).attribute(x, target)          # like x
    GuidedGradCAM(model, layer).attribute(x, target)    # like x
    IntegratedGradients(model).attribute(x, target)     # like x
    explain(model, x, target, layer=layer)              # {"grad_cam", "guided_backprop", "guided_grad_cam"}
    agreement(coarse, fine)                             # [N] in [-1, 1]

Tensors in, tensors out: normalising and colouring for display is :mod:`model.visualize`'s job.
The caller's model is never left modified: hooks exist only during one forward pass, and
gradients are taken with ``torch.autograd.grad`` (parameters' ``.grad`` untouched).
"""

from model.attribution.agreement import agreement, map_similarity, reduce_channels
from model.attribution.base import Attribution, LayerAttribution
from model.attribution.errors import AttributionError, FunctionalReLUError
from model.attribution.explain import DEFAULT_METHODS, METHODS, explain
from model.attribution.grad_cam import GradCAM
from model.attribution.guided_backprop import GuidedBackprop
from model.attribution.guided_grad_cam import GuidedGradCAM
from model.attribution.integrated_gradients import IntegratedGradients

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Attribution",
    "AttributionError",
    "FunctionalReLUError",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "LayerAttribution",
    "agreement",
    "explain",
    "map_similarity",
    "reduce_channels",
]
