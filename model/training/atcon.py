"""The ATCON unsupervised loss: make two attribution methods agree on the model's own prediction.

Source: Mirzazadeh et al., "ATCON: Attention Consistency for Vision Models" (WACV 2023); the
exact recipe is specified in ``shared/ATCON.md``, which this module follows step by step. Shapes:
N samples, C colour channels, T frames, K classes; images ``[N, C, H, W]``, clips
``[N, C, T, H, W]``; the Grad-CAM layer's map has resolution ``S = (h, w)`` (images) or
``(t, h, w)`` (clips; ``t = T`` for a per-frame 2D net).

Default configuration (``resolution_match="mask"``), for each unlabelled input ``x``:

1. ``c = argmax f(x)``, the model's own top-1 class (no label; optionally among the classes not
   in ``ignore_classes``, e.g. a background class);
2. ``cam(x) = sum_k w_k A_k`` with ``w = mean_{h,w} dy_c/dA`` (Grad-CAM, Selvaraju et al. 2017,
   eq. 1-2, *without* ReLU or upsampling; one weight vector per time step for clips);
3. ``g = sum_channels |GB(x)|``, Guided Backprop (Springenberg et al. 2015) of ``y_c``;
4. ``m = sigmoid(k * (zscore(g) - tau))`` with ``tau = 0.5`` (in std units, ATCON.md's fix of the
   released code's threshold on raw magnitudes) and slope ``k = mask_intensity``; ``x' = m * x``;
5. ``cam' = cam(x')`` for the same class ``c``;
6. ``loss = -mean_n pearson(sigmoid(zscore(cam_n)), sigmoid(zscore(cam'_n)))``.

Every map keeps its autograd graph (``create_graph=True``), so the loss reaches the weights
through both CAMs *and* through the mask (second-order backprop; ``detach_mask`` is the ablation
that cuts the mask path). Everything is batched: one forward/backward per pass for the whole
batch, never a per-sample Python loop. Grad-CAM and Guided Backprop of ``x`` share one forward
and one backward pass (the recipe of :func:`model.attribution.fused.fused_maps`, see
:func:`fused_cam_and_guided` for why it is repeated here).

Numerical safety (a bug of the released code was a NaN from z-scoring a constant map): the
z-score divides by ``sqrt(var + (eps_rel * rms)^2)`` (by ~1 for an all-zero map), so an exactly
constant map gives 0 and a constant map whose mean does not round exactly (float residue ~1e-7
of its value) is not blown up into order-one noise, as ``(m - mean) / (std + eps)`` would do for
maps of any magnitude above ``eps``; every correlation/cosine has a floor in its denominator. A
constant map, an all-zero gradient or an all-zero input give a finite loss and finite gradients.

Memory: every instrumented pass runs inside :func:`traced`, which empties the engine's ``Trace``
afterwards; otherwise the trace and its tensor hooks form a reference cycle through C++ autograd
nodes that Python's garbage collector cannot free, and each step would leak its whole graph.

The attribution methods assume batch-independent forward passes (``target_scores`` sums the
batch), so :class:`ATCONLoss` runs the model with BatchNorm (and Dropout) in eval mode; see
:func:`unsupervised_mode`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attribution import GradCAM, IntegratedGradients, reduce_channels
from model.attribution.base import prepare_inputs, resolve_layer, resolve_targets, target_scores, upsample_map
from model.attribution.trace import Trace, traced_forward

__all__ = [
    "FINE_METHODS",
    "RESOLUTION_MATCHES",
    "SIMILARITIES",
    "ATCONConfig",
    "ATCONLoss",
    "ATCONOutput",
    "dot_similarity",
    "frozen_batchnorm",
    "fused_cam_and_guided",
    "map_similarity",
    "pearson_similarity",
    "reflect_padding",
    "safe_zscore",
    "soft_mask",
    "ssim_similarity",
    "top_class",
    "traced",
    "unsupervised_mode",
]

logger = logging.getLogger(__name__)

RESOLUTION_MATCHES: tuple[str, ...] = ("mask", "upsample", "pool", "reverse_mask")
SIMILARITIES: tuple[str, ...] = ("pearson", "dot", "ssim")
FINE_METHODS: tuple[str, ...] = ("guided_backprop", "integrated_gradients")

# Floors used by the similarity measures. _REL_EPS is relative to a map's RMS, so the z-score is
# scale free (gradient maps of a small model can be 1e-6 in magnitude) and a constant map, whose
# float rounding leaves ~1e-7 relative "variation", z-scores to ~1e-4 instead of noise of order 1.
_REL_EPS = 1e-3
# Mean square below which a map counts as all zero (rms 1e-12; float32 represents it exactly enough).
_DEAD_MS = 1e-24
# Floor of the mean square of the sigmoid'd z-scores in the Pearson denominator: a real map has
# ~0.04 per element there, the sigmoid of a constant map's ~1e-4 residue ~1e-9.
_MS_FLOOR = 1e-6


@dataclass(frozen=True)
class ATCONConfig:
    """Options of the ATCON loss (names in words, as ATCON.md asks).

    Attributes:
        resolution_match: how the coarse (Grad-CAM) and fine (Guided Backprop) maps are brought to
            one resolution: ``mask`` (default: fine map -> soft mask -> Grad-CAM of the masked
            input, compared with Grad-CAM of the input), ``upsample`` (Grad-CAM upsampled to the
            fine map), ``pool`` (fine map average-pooled to Grad-CAM's resolution),
            ``reverse_mask`` (mask from the upsampled Grad-CAM, fine maps of input and masked
            input compared).
        similarity: ``pearson`` (default; on sigmoid of z-scores), ``dot`` (absolute cosine of
            the z-scored maps) or ``ssim`` (1 - SSIM of the sigmoid of the z-scored maps, 11x11
            Gaussian window, sigma 1.5).
        fine_method: ``guided_backprop`` (default) or ``integrated_gradients`` (zero baseline,
            ``ig_steps`` points; the paper's ablation).
        mask_intensity: slope ``k`` of the soft mask ``sigmoid(k * (z - tau))``.
        mask_threshold: ``tau`` in standard deviations of the map (0.5 = mean + std/2).
        detach_mask: ablation: no gradient through the mask (first-order in the mask path).
        per_time_step: clips: one Grad-CAM weight vector per time step (ATCON's video variant).
        ig_steps: quadrature points for ``integrated_gradients``.
        ignore_classes: class indices never explained; each input's target is its top class
            among the others. Our addition for single-label data with a background class
            (Wardwatch's ``none`` clips, most of continuous video): the Grad-CAM of "nothing is
            happening" has no object to point at, so asking it to agree with Guided Backprop
            only adds noise. Default ``()``: ATCON.md's plain top-1 class.
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
# Map statistics and similarities (all [N, ...] -> [N], batched, differentiable, NaN-free)
# --------------------------------------------------------------------------------------------


def safe_zscore(m: Tensor) -> Tensor:
    """Per-sample z-score of maps ``[N, ...]`` (same shape out), safe for constant and zero maps.

    ``(m - mean) / sqrt(var + (1e-3 * rms)^2)``: the relative floor keeps the rounding residue of
    a constant map (~1e-7 of its value) near 0 instead of blowing it up to order-one noise, while
    staying scale free (a gradient map of magnitude 1e-6 z-scores like one of magnitude 1). A map
    with ``rms <= 1e-12`` (e.g. all-zero gradients) has no scale to normalise by: it is divided by
    ~1 instead, which gives ~0 with a bounded gradient (a bare ``1/std`` there would send an
    unbounded gradient into the weights).
    """
    flat = m.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    centred = flat - mean
    var = (centred * centred).mean(dim=1, keepdim=True)
    ms = (flat * flat).mean(dim=1, keepdim=True).detach()  # the floor's scale needs no gradient
    alive = ms > _DEAD_MS
    floor = torch.where(alive, (_REL_EPS * _REL_EPS) * ms, torch.ones_like(ms))
    return (centred / torch.sqrt(var + floor)).view_as(m)


def pearson_similarity(a: Tensor, b: Tensor) -> Tensor:
    """ATCON's default: Pearson correlation of ``sigmoid(zscore(a))`` and ``sigmoid(zscore(b))``.

    ``a``, ``b``: ``[N, ...]`` of the same shape; returns ``[N]`` in [-1, 1] (0 for a constant map).
    The sigmoid bounds the pull of a few extreme pixels, typical of gradient maps.
    """
    sa = torch.sigmoid(safe_zscore(a)).flatten(1)
    sb = torch.sigmoid(safe_zscore(b)).flatten(1)
    da = sa - sa.mean(dim=1, keepdim=True)
    db = sb - sb.mean(dim=1, keepdim=True)
    d = da.shape[1]
    floor = _MS_FLOOR * d
    cov = (da * db).sum(dim=1)
    return cov / torch.sqrt(((da * da).sum(dim=1) + floor) * ((db * db).sum(dim=1) + floor))


def dot_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Absolute inner product of the z-scored maps, each scaled to unit L2 norm: ``[N]`` in [0, 1].

    The z-scoring makes it independent of each map's offset and scale (a raw inner product could
    be raised without bound by inflating the maps); the absolute value accepts a sign flip, as in
    the released code's ``abs(dot)``.
    """
    za = safe_zscore(a).flatten(1)
    zb = safe_zscore(b).flatten(1)
    na = torch.sqrt((za * za).sum(dim=1) + _MS_FLOOR * za.shape[1])
    nb = torch.sqrt((zb * zb).sum(dim=1) + _MS_FLOOR * zb.shape[1])
    return ((za * zb).sum(dim=1) / (na * nb)).abs()


def _gaussian_window(size: int, sigma: float, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(coords * coords) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_similarity(a: Tensor, b: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM (Wang et al. 2004, eq. 13) of ``sigmoid(zscore(.))`` of the maps, ``[N]`` (1 = identical).

    Why the sigmoid after the z-score (ATCON.md says "on z-scored maps"): SSIM assumes
    non-negative images; on signed z-scores both its luminance and its structure terms flip sign
    for a negated map and their product calls a map and its negative similar (SSIM(z, -z) ~ +1).
    The sigmoid maps z-scores monotonically into (0, 1), as for the Pearson similarity.

    2D maps ``[N, h, w]``; 3D maps ``[N, t, h, w]`` are compared slice by slice (time folded
    into the batch) and averaged. Gaussian window ``window x window`` with ``sigma`` (the
    paper's 11 / 1.5), applied separably without padding ("valid"); on maps smaller than the
    window it shrinks to the largest odd size that fits (Grad-CAM maps are often 4x4 to 8x8).
    Constants ``C1 = 0.01^2``, ``C2 = 0.03^2`` (dynamic range 1, that of the sigmoid).
    """
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    n = a.shape[0]
    za, zb = torch.sigmoid(safe_zscore(a)), torch.sigmoid(safe_zscore(b))
    if za.dim() == 2:  # [N, L] vectors: treat as [N, 1, L]
        za, zb = za[:, None], zb[:, None]
    if za.dim() == 4:
        za, zb = za.flatten(0, 1), zb.flatten(0, 1)  # [N*t, h, w]
    h, w = za.shape[-2:]
    x = torch.stack([za, zb], dim=1)  # [M, 2, h, w]
    stats = torch.cat([x, x * x, (x[:, :1] * x[:, 1:])], dim=1)  # [M, 5, h, w]: a, b, a2, b2, ab
    kh, kw = _odd_fit(window, h), _odd_fit(window, w)
    gh = _gaussian_window(kh, sigma, dtype=x.dtype, device=x.device)
    gw = _gaussian_window(kw, sigma, dtype=x.dtype, device=x.device)
    c = stats.shape[1]
    stats = F.conv2d(stats, gh.view(1, 1, kh, 1).expand(c, 1, kh, 1), groups=c)
    stats = F.conv2d(stats, gw.view(1, 1, 1, kw).expand(c, 1, 1, kw), groups=c)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.unbind(dim=1)
    var_a, var_b, cov = e_aa - mu_a * mu_a, e_bb - mu_b * mu_b, e_ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1).view(n, -1).mean(dim=1)


def _odd_fit(window: int, size: int) -> int:
    k = min(window, size)
    return k if k % 2 == 1 else k - 1


def map_similarity(a: Tensor, b: Tensor, similarity: str) -> tuple[Tensor, Tensor]:
    """``(loss [N], agreement [N])`` for the named similarity.

    ``pearson``: loss = -r; ``dot``: loss = -|cos|; ``ssim``: loss = 1 - SSIM (ATCON.md).
    """
    if similarity == "pearson":
        s = pearson_similarity(a, b)
        return -s, s.detach()
    if similarity == "dot":
        s = dot_similarity(a, b)
        return -s, s.detach()
    if similarity == "ssim":
        s = ssim_similarity(a, b)
        return 1.0 - s, s.detach()
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")


def soft_mask(fine: Tensor, *, intensity: float, threshold: float) -> Tensor:
    """ATCON's soft mask ``sigmoid(k * (zscore(g) - tau))`` of a one-channel map ``[N, ...]``.

    Normalising first (ATCON.md's fix) makes the slope independent of the gradients' scale.
    """
    return torch.sigmoid(intensity * (safe_zscore(fine) - threshold))


def _apply_mask(x: Tensor, mask: Tensor) -> Tensor:
    """``x' = m * x`` with the one-channel mask ``[N, *spatial]`` broadcast over colour channels."""
    return x * mask.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Model state and transforms
# --------------------------------------------------------------------------------------------

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


@contextlib.contextmanager
def unsupervised_mode(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm statistics frozen (eval) and Dropout off while the ATCON loss runs.

    Why: the attribution engine explains a whole batch with one backward pass of the *summed*
    target logits, which is only per-sample when samples do not interact (train-mode BatchNorm
    couples them); ATCON.md also asks for frozen statistics during unsupervised steps so that
    masked inputs ``x'`` do not pollute the running means. Dropout is switched off so ``cam(x)``
    and ``cam(x')`` explain the same network.

    A frozen BatchNorm is the affine map ``x * w / sqrt(var + eps) + (b - mean * w / sqrt(var +
    eps))``; a forward hook returns exactly that (same values, same gradients for ``w`` and
    ``b``), because PyTorch's generic double backward of ``batch_norm`` is far more expensive
    than that of two element-wise ops (~15 % of a ResNet-18 ATCON step). Modes and hooks are
    restored / removed on exit.
    """
    changed = [m for m in model.modules() if isinstance(m, _NORM_TYPES) and m.training]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    handles = []
    try:
        for m in changed:
            m.train(False)
        handles = [m.register_forward_hook(_frozen_batchnorm) for m in norms]
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
    bn: nn.modules.batchnorm._BatchNorm = module  # type: ignore[assignment]
    x = args[0]
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape) + shift.view(shape)


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
# Instrumented passes that do not leak
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def traced(
    model: nn.Module,
    x: Tensor,
    *,
    layer: nn.Module | None = None,
    guided: bool = False,
    watch_functional_relu: bool = True,
) -> Iterator[Trace]:
    """:func:`~model.attribution.trace.traced_forward` whose :class:`Trace` is emptied on exit.

    Why: the trace's tensor hooks (bound methods of the trace, stored on autograd nodes in C++)
    and the trace's own references to the activations, logits and layer gradient form a cycle
    that Python's garbage collector cannot see, so every traced pass would keep its whole
    autograd graph alive (measured: ~50 MB per Grad-CAM call on a batch of 32 tiny3d clips;
    a training run grows until the OOM killer stops it). Dropping the trace's tensor references
    breaks the cycle. Results computed inside the block are unaffected (they hold their own
    references to what they need).
    """
    trace = traced_forward(model, x, layer=layer, guided=guided, watch_functional_relu=watch_functional_relu)
    try:
        yield trace
    finally:
        trace.logits = trace.activations = trace.layer_grad = None


def fused_cam_and_guided(
    model: nn.Module,
    x: Tensor,
    layer: nn.Module,
    *,
    cam_method: GradCAM,
    per_time_step: bool,
    watch_functional_relu: bool = True,
    ignore_classes: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor, Tensor]:
    """``(targets [N], Grad-CAM [N, *S] pre-ReLU, Guided Backprop like x)`` from one forward pass,
    all differentiable (``create_graph=True``).

    The recipe of :func:`model.attribution.fused.fused_maps` (one backward pass when no
    ``nn.ReLU`` runs after ``layer``, else a short extra pass for Grad-CAM's plain gradient), run
    inside :func:`traced` so that no graph is leaked; ``fused_maps`` itself keeps its trace
    private and cannot be emptied from outside.
    """
    with traced(model, x, layer=layer, guided=True, watch_functional_relu=watch_functional_relu) as trace:
        assert trace.logits is not None
        targets = top_class(trace.logits, ignore_classes)
        score = target_scores(trace.logits, targets)
        if trace.relus_after_layer:  # the guided rule would alter dS/dA: plain pass first
            assert trace.activations is not None
            trace.guided, trace.capture = False, True
            cam_method._gradients(score, [trace.activations], create_graph=True, retain_graph=True)
            trace.guided, trace.capture = True, False
        else:
            trace.guided, trace.capture = True, True
        (guided,) = cam_method._gradients(score, [x], create_graph=True)
        cam = cam_method.layer_map(trace, x, per_time_step=per_time_step)
    return targets, cam, guided


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
        self._cam = GradCAM(model, self.layer)
        # The functional-ReLU watch of a guided pass costs ~10% of a small net's step; a
        # model's code does not change between steps, so one watched pass that succeeded is
        # proof enough for every later call on this model.
        self._relus_checked = False

    def __call__(self, inputs: Tensor) -> ATCONOutput:
        with unsupervised_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            return self._loss(inputs)

    # --- the two attribution families, always with create_graph=True ---------------------------
    def _cam_and_fine(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(targets [N], cam [N, *S], fine one-channel map [N, *spatial])`` of ``x``."""
        cfg = self.config
        if cfg.fine_method == "guided_backprop":
            targets, cam, guided = fused_cam_and_guided(
                self.model,
                x,
                self.layer,
                cam_method=self._cam,
                per_time_step=cfg.per_time_step,
                watch_functional_relu=not self._relus_checked,
                ignore_classes=cfg.ignore_classes,
            )
            self._relus_checked = True
            return targets, cam, reduce_channels(guided)
        targets, cam = self._grad_cam(x, None)
        return targets, cam, self._fine(x, targets)

    def _grad_cam(self, x: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """Grad-CAM at the layer's resolution, no ReLU, graph kept: ``(targets, cam [N, *S])``."""
        with traced(self.model, x, layer=self.layer, guided=False) as trace:
            assert trace.logits is not None
            if target is None:
                targets = top_class(trace.logits, self.config.ignore_classes)
            else:
                targets = resolve_targets(target, trace.logits)
            self._cam.layer_gradient(trace, targets, create_graph=True)
            return targets, self._cam.layer_map(trace, x, per_time_step=self.config.per_time_step)

    def _fine(self, x: Tensor, targets: Tensor) -> Tensor:
        """One-channel fine map ``sum_c |attr|`` of ``x`` for ``targets`` (graph kept)."""
        if self.config.fine_method == "integrated_gradients":
            attr = IntegratedGradients(self.model).attribute(
                x, targets, baselines=None, n_steps=self.config.ig_steps, create_graph=True
            )
            return reduce_channels(attr)
        with traced(self.model, x, guided=True, watch_functional_relu=not self._relus_checked) as trace:
            assert trace.logits is not None
            (grad,) = self._cam._gradients(target_scores(trace.logits, targets), [x], create_graph=True)
        self._relus_checked = True
        return reduce_channels(grad)

    def _mask(self, fine: Tensor) -> Tensor:
        cfg = self.config
        mask = soft_mask(fine, intensity=cfg.mask_intensity, threshold=cfg.mask_threshold)
        return mask.detach() if cfg.detach_mask else mask

    # --- the recipe ---------------------------------------------------------------------------
    def _loss(self, inputs: Tensor) -> ATCONOutput:
        cfg = self.config
        x = prepare_inputs(inputs)
        mask: Tensor | None = None
        if cfg.resolution_match == "reverse_mask":
            targets, cam, fine = self._cam_and_fine(x)
            mask = self._mask(upsample_map(cam, fine.shape[1:]))
            fine_masked = self._fine(_apply_mask(x, mask), targets)
            a, b = fine, fine_masked
        else:
            targets, cam, fine = self._cam_and_fine(x)
            if cfg.resolution_match == "mask":
                mask = self._mask(fine)
                _, cam_masked = self._grad_cam(_apply_mask(x, mask), targets)
                a, b = cam, cam_masked
            elif cfg.resolution_match == "upsample":
                a, b = upsample_map(cam, fine.shape[1:]), fine
            else:  # pool
                a, b = cam, _adaptive_pool(fine, tuple(cam.shape[1:]))
        per_sample, agree = map_similarity(a, b, cfg.similarity)
        loss = per_sample.mean()
        if not torch.isfinite(loss.detach()):  # should be impossible; fail loudly rather than train on NaN
            raise FloatingPointError("ATCON loss is not finite")
        return ATCONOutput(
            loss=loss,
            per_sample=per_sample,
            agreement=agree,
            targets=targets,
            coarse=a.detach(),
            fine=b.detach(),
            mask=None if mask is None else mask.detach(),
        )


def _adaptive_pool(m: Tensor, size: tuple[int, ...]) -> Tensor:
    """Average-pool maps ``[N, *S_in]`` to ``[N, *size]`` (ATCON's ``pool`` option)."""
    if tuple(m.shape[1:]) == size:
        return m
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    return pool(m[:, None], size)[:, 0]
