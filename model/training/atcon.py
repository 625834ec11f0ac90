"""The ATCON unsupervised loss: make two attribution methods agree on the model's own prediction.

Source: Mirzazadeh et al., "ATCON: Attention Consistency for Vision Models" (WACV 2023); the
recipe is specified in ``shared/ATCON.md`` and implemented once, in
:func:`model.attribution.consistency.consistency` (the same function gives the agreement score
the server stores beside each event). This module adds what training needs around it:

* :class:`ATCONLoss`: the batch loss ``mean_n -score_n`` with every map's graph kept
  (``create_graph=True``), so the loss reaches the weights through both CAMs and through the
  mask. Its parameter gradient is the true derivative of the loss (the engine's guided-ReLU hooks
  are removed before the caller's backward; tested against central finite differences in float64).
* :func:`unsupervised_mode`: BatchNorm statistics frozen and Dropout off during ATCON steps;
  :func:`frozen_batchnorm` for supervised fine-tuning steps; :func:`reflect_padding`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.attribution.base import resolve_layer
from model.attribution.consistency import FINE_METHODS, RESOLUTION_MATCHES, ATCONConfig, consistency, top_class
from model.training.batchnorm_folding import (
    ConvBN,
    conv_bn_pairs,
    folded_batchnorm,
    frozen_scale_shift,
    plain_convolutions,
    randomise_batchnorms,
)

__all__ = [
    "FINE_METHODS",
    "RESOLUTION_MATCHES",
    "ATCONConfig",
    "ATCONLoss",
    "ATCONOutput",
    "foldable_pairs",
    "frozen_batchnorm",
    "reflect_padding",
    "top_class",
    "unsupervised_mode",
]

logger = logging.getLogger(__name__)


@dataclass
class ATCONOutput:
    """Result of one :class:`ATCONLoss` call.

    Attributes:
        loss: scalar, differentiable w.r.t. the model's parameters (mean over the batch).
        per_sample: ``[N]`` per-sample loss (differentiable).
        agreement: ``[N]`` detached similarity in the similarity measure's own units (Pearson /
            cosine in [-1, 1]; SSIM).
        targets: ``int64 [N]`` the explained (top-1) class per sample.
        coarse: detached first compared map (e.g. ``cam(x)``, ``[N, *S]``).
        fine: detached second compared map (e.g. ``cam(x')``).
        mask: detached soft mask ``[N, H, W]`` / ``[N, T, H, W]`` (``None`` without one).
    """

    loss: Tensor
    per_sample: Tensor
    agreement: Tensor
    targets: Tensor
    coarse: Tensor
    fine: Tensor
    mask: Tensor | None


# --------------------------------------------------------------------------------------------
# Model state and transforms
# --------------------------------------------------------------------------------------------

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


@contextlib.contextmanager
def unsupervised_mode(model: nn.Module, fold: Sequence[ConvBN] = (), *, share_weights: bool = False
                      ) -> Iterator[nn.Module]:
    """BatchNorm statistics frozen (eval) and Dropout off while the ATCON loss runs.

    Why: the attribution engine explains a whole batch with one backward pass of the *summed*
    target logits, which is only per-sample when samples do not interact (train-mode BatchNorm
    couples them); ATCON.md also asks for frozen statistics during unsupervised steps so that
    masked inputs ``x'`` do not pollute the running means. Dropout is switched off so ``cam(x)``
    and ``cam(x')`` explain the same network.

    A frozen BatchNorm is the affine map ``x * w / sqrt(var + eps) + (b - mean * w / sqrt(var +
    eps))``; a forward hook returns exactly that (same values, same gradients for ``w`` and
    ``b``), because PyTorch's generic double backward of ``batch_norm`` is far more expensive
    than that of two element-wise ops (~15 % of a ResNet-18 ATCON step). Cheaper still, the
    BatchNorms in ``fold`` (found by :func:`~model.training.batchnorm_folding.verified_pairs`) are
    folded into their convolutions' weights, and every plain convolution runs through
    :mod:`~model.training.second_order_conv`. ``share_weights``: the block computes one loss, differentiated
    once (:class:`ATCONLoss`); its forwards then share each convolution's weight and pool its gradient terms.
    Modes, hooks and folding are undone on exit.
    """
    changed = [m for m in model.modules() if isinstance(m, _NORM_TYPES) and m.training]
    folded = {id(bn) for _, bn in fold}
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in folded
    ]
    handles = []
    try:
        for m in changed:
            m.train(False)
        handles = [m.register_forward_hook(_frozen_batchnorm) for m in norms]
        with folded_batchnorm(fold, plain_convolutions(model), share_weights=share_weights):
            yield model
    finally:
        for h in handles:
            h.remove()
        for m in changed:
            m.train(True)


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers in eval mode (running statistics frozen; affine weights still trained).

    A fine-tuning stabiliser for supervised steps on small labelled batches: in train mode every
    step moves the running statistics towards the statistics of a handful of (augmented) clips,
    and a classifier selected for its validation score can lose it within one epoch even at a
    learning rate of 1e-6 (observed on the synthetic ward clips). Dropout is left as it is.
    """
    changed = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    try:
        for m in changed:
            m.train(False)
        yield model
    finally:
        for m in changed:
            m.train(True)


def _frozen_batchnorm(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
    """The eval-mode BatchNorm as an explicit affine map of its input (see unsupervised_mode)."""
    x = args[0]
    scale, shift = frozen_scale_shift(module)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape) + shift.view(shape)


def foldable_pairs(model: nn.Module, inputs: Tensor) -> list[ConvBN]:
    """The conv/BatchNorm pairs of ``model`` that :func:`unsupervised_mode` may fold, checked once.

    Found on one forward pass, then verified on a copy of the model whose BatchNorms are randomised
    (so a folding that changes the function cannot pass as the near-identity of a fresh BatchNorm): the
    copy's logits under :func:`unsupervised_mode` with folding, exactly as the loss will run, must agree to
    float precision with the copy itself in eval mode (BatchNorm frozen, Dropout off, nothing patched).
    Returns the original model's modules.
    """
    import copy

    probe = copy.deepcopy(model).eval()
    randomise_batchnorms(probe)
    with torch.no_grad():
        pairs = conv_bn_pairs(probe, inputs)
        plain = probe(inputs)
    if not pairs:
        return []
    with torch.no_grad(), unsupervised_mode(probe, pairs):
        folded = probe(inputs)
    scale = float(plain.abs().max().clamp_min(1.0))
    if not torch.allclose(folded, plain, rtol=1e-4, atol=1e-5 * scale):
        logger.info("BatchNorm folding would change %s's output; ATCON runs it unfolded", type(model).__name__)
        return []
    names = {id(m): name for name, m in probe.named_modules()}
    return [(model.get_submodule(names[id(c)]), model.get_submodule(names[id(b)])) for c, b in pairs]


def reflect_padding(model: nn.Module) -> nn.Module:
    """Switch zero padding to ``reflect`` (2D convs) / ``replicate`` (3D convs), in place.

    ATCON.md's ``reflect_padding`` option: zero padding makes a border of the input look like an
    edge, which shows up as bright frames around attribution maps; mirrored borders reduce it.
    (PyTorch's reflect padding for 5D inputs exists, but the paper's video model used replicate.)
    Convs without padding, or whose padding would exceed a small feature map, are left alone at
    run time by PyTorch raising; keep inputs large enough (>= 2x the padding at every stage).
    Note: the padding mode is not part of a ``state_dict``; a checkpoint reloaded with
    ``build_model`` has zero padding again unless this transform is re-applied.
    Returns ``model`` for chaining.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d) and any(int(p) > 0 for p in _as_tuple(m.padding)):
            # _ConvNd.forward pads with F.pad(mode=padding_mode) using the reversed padding it
            # computed in __init__, so switching the mode is all it takes.
            m.padding_mode = "reflect" if isinstance(m, nn.Conv2d) else "replicate"
            count += 1
    logger.debug("reflect_padding: %d convolutions switched", count)
    return model


def _as_tuple(p: object) -> tuple[int, ...]:
    if isinstance(p, str):
        return ()
    if isinstance(p, int):
        return (p,)
    return tuple(int(v) for v in p)  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


class ATCONLoss:
    """ATCON's unsupervised loss for ``model`` read at ``layer`` (default: the last conv block).

    ``ATCONLoss(model, config=ATCONConfig())(x)`` takes an unlabelled batch (images
    ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``, normalised float) and returns an
    :class:`ATCONOutput` whose ``loss`` can be back-propagated into the model's weights. The model
    runs under :func:`unsupervised_mode` (BatchNorm frozen) during the call.

    Cost (default ``mask``): the input pass (1 forward + 1 backward with graph, shared by
    Grad-CAM and Guided Backprop), the masked pass (1 forward + a backward down to the layer),
    then the caller's backward through all of it: roughly 3 forward and 4 backward passes.
    """

    def __init__(
        self, model: nn.Module, layer: nn.Module | str | None = None, config: ATCONConfig | None = None
    ) -> None:
        if layer is None:
            from model.nets import default_target_layer

            layer = default_target_layer(model)
        self.model = model
        self.layer = resolve_layer(model, layer)
        self.config = config or ATCONConfig()
        # The functional-ReLU watch of a guided pass costs ~10% of a small net's step; a
        # model's code does not change between steps, so one watched call that succeeded is
        # proof enough for every later call on this model.
        self._relus_checked = False
        self._fold: list[ConvBN] | None = None  # conv/BatchNorm pairs, found on the first call

    def __call__(self, inputs: Tensor) -> ATCONOutput:
        if self._fold is None:
            self._fold = foldable_pairs(self.model, inputs)
        with (
            unsupervised_mode(self.model, self._fold, share_weights=True),
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            result = consistency(
                self.model,
                inputs,
                self.layer,
                self.config,
                create_graph=True,
                watch_functional_relu=not self._relus_checked,
            )
            loss = result.loss.mean()  # inside: a caller under inference_mode still gets a differentiable loss
        self._relus_checked = True
        if not torch.isfinite(loss.detach()):  # should be impossible; fail loudly rather than train on NaN
            raise FloatingPointError("ATCON loss is not finite")
        return ATCONOutput(
            loss=loss,
            per_sample=result.loss,
            agreement=result.score.detach(),
            targets=result.targets,
            coarse=result.coarse.detach(),
            fine=result.fine.detach(),
            mask=None if result.mask is None else result.mask.detach(),
        )
