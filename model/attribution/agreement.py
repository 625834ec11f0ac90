"""How much two explanations agree: ATCON's similarity measures (shared/ATCON.md, step 6).

One home for every similarity, so that the agreement score the server stores beside an event and
shows a clinician is computed by the very function the ATCON loss maximises (see
:mod:`.consistency`, which applies these to Grad-CAM and Guided Backprop maps).

Numerical safety (a bug of the released ATCON code was a NaN from z-scoring a constant map): the
z-score divides by ``sqrt(var + (eps_rel * rms)^2)`` (by ~1 for an all-zero map), so an exactly
constant map gives 0 and a constant map whose mean does not round exactly (float residue ~1e-7
of its value) is not blown up into order-one noise, as ``(m - mean) / (std + eps)`` would do for
maps of any magnitude above ``eps``; every correlation/cosine has a floor in its denominator. A
constant map, an all-zero gradient or an all-zero input give finite scores and finite gradients.

All functions are batched ``[N, ...] -> [N]`` and differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SIMILARITIES",
    "apply_mask",
    "dot_similarity",
    "pearson_similarity",
    "pool_to",
    "reduce_channels",
    "safe_zscore",
    "similarity",
    "similarity_loss",
    "soft_mask",
    "ssim_similarity",
]

SIMILARITIES: tuple[str, ...] = ("pearson", "dot", "ssim")

# Floors used by the similarity measures. _REL_EPS is relative to a map's RMS, so the z-score is
# scale free (gradient maps of a small model can be 1e-6 in magnitude) and a constant map, whose
# float rounding leaves ~1e-7 relative "variation", z-scores to ~1e-4 instead of noise of order 1.
_REL_EPS = 1e-3
# Mean square below which a map counts as all zero (rms 1e-12; float32 represents it exactly enough).
_DEAD_MS = 1e-24
# Floor of the mean square of the sigmoid'd z-scores in the Pearson denominator: a real map has
# ~0.04 per element there, the sigmoid of a constant map's ~1e-4 residue ~1e-9.
_MS_FLOOR = 1e-6


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
    # Not detached: the floor is part of the function, so its gradient is part of the derivative
    # (a detached floor once made the ATCON gradient differ from the true one by ~1e-5 relative).
    ms = (flat * flat).mean(dim=1, keepdim=True)
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


def similarity(a: Tensor, b: Tensor, name: str = "pearson") -> Tensor:
    """The named similarity of maps ``a`` and ``b`` (same shape ``[N, ...]``), ``[N]``; higher = agree more.

    ``pearson`` (default) and ``dot`` lie in [-1, 1] / [0, 1]; ``ssim`` is at most 1.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to compare differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if name == "pearson":
        return pearson_similarity(a, b)
    if name == "dot":
        return dot_similarity(a, b)
    if name == "ssim":
        return ssim_similarity(a, b)
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {name!r}")


def similarity_loss(score: Tensor, name: str) -> Tensor:
    """ATCON's per-sample loss for a similarity score: ``-r`` (pearson), ``-|cos|`` (dot), ``1 - SSIM``."""
    return 1.0 - score if name == "ssim" else -score


def reduce_channels(fine: Tensor) -> Tensor:
    """ATCON's one-channel Guided Backprop map: ``sum over colour channels of |grad|``.

    ``[N, C, H, W] -> [N, H, W]``, ``[N, C, T, H, W] -> [N, T, H, W]``.
    """
    return fine.abs().sum(dim=1)


def soft_mask(fine: Tensor, *, intensity: float, threshold: float) -> Tensor:
    """ATCON's soft mask ``sigmoid(k * (zscore(g) - tau))`` of a one-channel map ``[N, ...]``.

    Normalising first (ATCON.md's fix) makes the slope independent of the gradients' scale.
    """
    return torch.sigmoid(intensity * (safe_zscore(fine) - threshold))


def apply_mask(x: Tensor, mask: Tensor) -> Tensor:
    """``x' = m * x`` with the one-channel mask ``[N, *spatial]`` broadcast over colour channels."""
    return x * mask.unsqueeze(1)


def pool_to(m: Tensor, size: tuple[int, ...]) -> Tensor:
    """Average-pool maps ``[N, *S_in]`` to ``[N, *size]`` (ATCON's ``pool`` option)."""
    if tuple(m.shape[1:]) == size:
        return m
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    return pool(m[:, None], size)[:, 0]
