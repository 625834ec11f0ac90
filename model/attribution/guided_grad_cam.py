"""Guided Grad-CAM (Selvaraju et al., ICCV 2017, sec. 3): the Guided Backprop gradient
multiplied pointwise by the (ReLU'd, upsampled) Grad-CAM map, which keeps Guided Backprop's
pixel detail but only where Grad-CAM says the class evidence is.

Computed from one forward and one backward pass where the architecture allows (see
:mod:`.fused`).
"""

from __future__ import annotations

from torch import Tensor

from model.attribution.base import LayerAttribution, Target, grad_enabled, prepare_inputs
from model.attribution.fused import fused_step
from model.attribution.grad_cam import GradCAM

__all__ = ["GuidedGradCAM", "combine"]


def combine(guided: Tensor, cam_upsampled: Tensor) -> Tensor:
    """``guided [N, C, *S] * cam [N, *S]`` broadcast over colour channels."""
    return guided * cam_upsampled.unsqueeze(1)


class GuidedGradCAM(LayerAttribution):
    """Guided Grad-CAM maps of ``model`` read at ``layer``."""

    @grad_enabled
    def attribute(
        self,
        inputs: Tensor,
        target: Target = None,
        *,
        per_time_step: bool = False,
        create_graph: bool = False,
    ) -> Tensor:
        """Guided Grad-CAM of each sample for its target class.

        Args:
            inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``.
            target: int, one int per sample, tensor ``[N]`` or ``None`` (predicted class).
            per_time_step: clips: Grad-CAM weights per time step (see :class:`GradCAM`).
            create_graph: keep the graph for a differentiable result.

        Returns:
            Same shape as ``inputs``.
        """
        x = prepare_inputs(inputs)
        maps = fused_step(self.model, x, self.layer, target, create_graph=create_graph)
        cam = GradCAM.finish(
            maps.cam(per_time_step=per_time_step), x, relu=True, upsample=True, create_graph=create_graph
        )
        return combine(maps.guided, cam)
