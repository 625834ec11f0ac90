"""How much two explanations agree: ATCON's similarity (shared/ATCON.md, step 6).

Each map is z-scored per sample (``(m - mean) / (std + eps)``; the epsilon makes a constant map
give 0 instead of NaN, a bug of the released ATCON code), passed through a sigmoid (which
bounds the influence of a few extreme pixels, typical of gradient maps), and the two results
are compared with the Pearson correlation. The score is in [-1, 1]: 1 = same pattern, 0 =
unrelated (or a constant map), -1 = opposite.

Comparing a coarse map (Grad-CAM, e.g. 7x7 or 2x7x7) with a fine one (Guided Backprop at input
resolution) needs one resolution; ATCON.md names two ways, both offered here:

* ``resolution="pool"`` (default, ATCON's ``pool`` option): the finer map is average-pooled
  (adaptively) down to the coarser one's size. Per dimension the smaller size wins, so the order
  of the arguments does not matter. Pooling also averages away Guided Backprop's pixel noise,
  which is what makes the score stable enough to show to a reviewer.
* ``resolution="upsample"`` (ATCON's ``upsample`` option): the coarser map is interpolated
  (bilinear / trilinear) up to the finer one's size.

Pass Grad-CAM at the layer's resolution (``upsample=False``) to get the pooled comparison ATCON
describes; a map already upsampled to the input is compared at input resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.attribution.base import upsample_map
from model.attribution.errors import AttributionError

__all__ = ["agreement", "map_similarity", "reduce_channels"]

_EPS = 1e-6


def reduce_channels(fine: Tensor) -> Tensor:
    """ATCON's one-channel Guided Backprop map: ``sum over colour channels of |grad|``.

    ``[N, C, H, W] -> [N, H, W]``, ``[N, C, T, H, W] -> [N, T, H, W]``.
    """
    return fine.abs().sum(dim=1)


def map_similarity(a: Tensor, b: Tensor, *, eps: float = _EPS) -> Tensor:
    """Pearson correlation of ``sigmoid(zscore(a))`` and ``sigmoid(zscore(b))`` per sample.

    ``a`` and ``b`` have the same shape ``[N, ...]``; returns ``[N]`` in [-1, 1]. Differentiable
    (ATCON's loss is ``-map_similarity(cam(x), cam(x'))``).
    """
    if a.shape != b.shape:
        raise AttributionError(f"maps to compare differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    sa = torch.sigmoid(_zscore(a.flatten(1), eps))
    sb = torch.sigmoid(_zscore(b.flatten(1), eps))
    da = sa - sa.mean(dim=1, keepdim=True)
    db = sb - sb.mean(dim=1, keepdim=True)
    cov = (da * db).sum(dim=1)
    norm = torch.sqrt((da * da).sum(dim=1) * (db * db).sum(dim=1) + eps * eps)
    return (cov / norm).clamp(-1.0, 1.0)


def _zscore(m: Tensor, eps: float) -> Tensor:
    mean = m.mean(dim=1, keepdim=True)
    std = m.std(dim=1, keepdim=True, unbiased=False)
    return (m - mean) / (std + eps)


def agreement(coarse: Tensor, fine: Tensor, *, resolution: str = "pool", eps: float = _EPS) -> Tensor:
    """Agreement of a coarse and a fine explanation of the same samples, ``[N]`` in [-1, 1].

    Args:
        coarse: Grad-CAM ``[N, h, w]`` (images) or ``[N, t, h, w]`` (clips), any resolution.
        fine: Guided Backprop (or IG) with colour channels, ``[N, C, H, W]`` /
            ``[N, C, T, H, W]``, reduced by :func:`reduce_channels`; or an already one-channel
            map ``[N, H, W]`` / ``[N, T, H, W]``.
        resolution: ``"pool"`` or ``"upsample"``, see the module docstring.
        eps: stabiliser of the z-score and the correlation.
    """
    if coarse.dim() not in (3, 4):
        raise AttributionError(f"coarse map must be [N,h,w] or [N,t,h,w], got shape {tuple(coarse.shape)}")
    if fine.dim() == coarse.dim() + 1:
        fine = reduce_channels(fine)
    if fine.dim() != coarse.dim() or fine.shape[0] != coarse.shape[0]:
        raise AttributionError(f"cannot compare maps of shapes {tuple(coarse.shape)} and {tuple(fine.shape)}")
    dtype = torch.promote_types(coarse.dtype, fine.dtype)
    coarse, fine = coarse.to(dtype), fine.to(dtype)
    a_size, b_size = tuple(coarse.shape[1:]), tuple(fine.shape[1:])
    if resolution == "pool":
        size = tuple(min(p, q) for p, q in zip(a_size, b_size, strict=True))
        coarse, fine = _pool(coarse, size), _pool(fine, size)
    elif resolution == "upsample":
        size = tuple(max(p, q) for p, q in zip(a_size, b_size, strict=True))
        coarse, fine = upsample_map(coarse, size), upsample_map(fine, size)
    else:
        raise AttributionError(f"resolution must be 'pool' or 'upsample', got {resolution!r}")
    return map_similarity(coarse, fine, eps=eps)


def _pool(m: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(m.shape[1:]) == size:
        return m
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    return pool(m[:, None], size)[:, 0]
