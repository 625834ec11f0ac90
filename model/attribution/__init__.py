"""Attribution engine: batched, differentiable explanations of image and clip classifiers.

Public surface (shapes: images ``[N, C, H, W]``, clips ``[N, C, T, H, W]``)::

    from model.attribution import GradCAM, GuidedBackprop, GuidedGradCAM, IntegratedGradients
    from model.attribution import explain, agreement

    GradCAM(model, layer).attribute(x, target)          # [N, H, W] / [N, T, H, W]
    GuidedBackprop(model).attribute(x, target)          # like x
    GuidedGradCAM(model, layer).attribute(x, target)    # like x
    IntegratedGradients(model).attribute(x, target)     # like x
    explain(model, x, target, layer=layer)              # {"grad_cam", "guided_backprop", "guided_grad_cam"}
    consistency(model, x, layer).score                  # [N], ATCON's agreement (its loss is -score)
    fused_step(model, x, layer, target)                 # Grad-CAM + Guided Backprop from one forward

Tensors in, tensors out: normalising and colouring for display is :mod:`model.visualize`'s job.
The caller's model is never left modified: module hooks exist only during one forward pass, tensor
hooks only inside one :func:`~model.attribution.trace.traced` block (so a loss on a map built with
``create_graph=True`` differentiates with the ordinary rules), and gradients are taken with
``torch.autograd.grad`` (parameters' ``.grad`` untouched).
"""

from model.attribution.agreement import SIMILARITIES, reduce_channels, similarity
from model.attribution.base import Attribution, LayerAttribution
from model.attribution.consistency import FINE_METHODS, RESOLUTION_MATCHES, ATCONConfig, Consistency, consistency
from model.attribution.errors import AttributionError, FunctionalReLUError
from model.attribution.explain import DEFAULT_METHODS, METHODS, explain
from model.attribution.fused import FusedMaps, fused_step
from model.attribution.grad_cam import GradCAM
from model.attribution.guided_backprop import GuidedBackprop
from model.attribution.guided_grad_cam import GuidedGradCAM
from model.attribution.integrated_gradients import IntegratedGradients
from model.attribution.trace import live_traces, traced

__all__ = [
    "DEFAULT_METHODS",
    "FINE_METHODS",
    "METHODS",
    "RESOLUTION_MATCHES",
    "SIMILARITIES",
    "ATCONConfig",
    "Attribution",
    "AttributionError",
    "Consistency",
    "FunctionalReLUError",
    "FusedMaps",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "LayerAttribution",
    "consistency",
    "explain",
    "fused_step",
    "live_traces",
    "reduce_channels",
    "similarity",
    "traced",
]
