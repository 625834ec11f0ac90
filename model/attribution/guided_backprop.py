"""Guided Backpropagation (Springenberg et al., "Striving for Simplicity: The All Convolutional
Net", ICLR workshop 2015, fig. 1): the input gradient with every ReLU's backward replaced by
``R_in = [x > 0] * max(R_out, 0)``, i.e. only positive signal flows back through positive units.

The rule is installed per call by :mod:`.trace` on ``nn.ReLU`` and ``nn.ReLU6`` modules; models
that call ReLU as a function are refused with
:class:`~model.attribution.errors.FunctionalReLUError`. Other activations (GELU, SiLU,
LeakyReLU, ...) keep their ordinary gradient.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from model.attribution.base import Attribution, Target, grad_enabled, prepare_inputs, resolve_targets, target_scores

__all__ = ["GuidedBackprop"]


class GuidedBackprop(Attribution):
    """Guided Backprop maps of ``model``: one forward and one full backward pass."""

    guided_relu: ClassVar[bool] = True

    @grad_enabled
    def attribute(self, inputs: Tensor, target: Target = None, *, create_graph: bool = False) -> Tensor:
        """Guided gradient of each sample's target logit with respect to its input.

        Args:
            inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``.
            target: int, one int per sample, tensor ``[N]`` or ``None`` (predicted class).
            create_graph: keep the graph (the guided rule is built from differentiable ops), so
                a loss on the map reaches the model's weights; otherwise the map is detached.

        Returns:
            Same shape as ``inputs`` (per colour channel, signed; ATCON reduces it with
            ``sum |.|`` over channels).
        """
        x = prepare_inputs(inputs)
        with self._traced(x) as trace:
            assert trace.logits is not None
            targets = resolve_targets(target, trace.logits)
            (grad,) = self._gradients(target_scores(trace.logits, targets), [x], create_graph=create_graph)
        return grad if create_graph else grad.detach()
