"""Evaluation for the ATCON experiments: classification, confidence intervals, localisation.

Classification (ATCON.md "Evaluation"): macro-F1 with per-class ``F1 = TP / (TP + (FP + FN) / 2)``
(sigmoid > 0.5 for multi-label, argmax for single-label; the functions of
:mod:`model.training.metrics`), mean average precision, percentile bootstrap confidence intervals
over resampled test items (1,000 runs) and the *paired* bootstrap of a difference (both models
scored on the same resampled items, which is what makes a small lift detectable).

Localisation (weakly supervised, from Grad-CAM):

* **mIoU** (the ATCON / CAM protocol): the Grad-CAM of the predicted class, upsampled to the
  input, clipped above ``mean + 2 std``, min-max normalised, binarised at 0.5; IoU with the union
  of the ground-truth rectangles of that class; averaged over the items where the predicted
  class is a true class (for a comparison, where *both* models predict a true class).
* **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): for every (item, true class with a region), a hit when the map's maximum lies in the
  region; accuracy = hits / trials.
* **Average Drop / Increase in Confidence** (Chattopadhay et al., "Grad-CAM++", WACV 2018, eq.
  19-20; TAME's variant keeps the top 100/50/15 % of the map): with ``Y`` the class probability on
  the input and ``O`` on the input multiplied by the (normalised) map,
  ``AD = 100 * mean(max(0, Y - O) / Y)`` and ``IC = 100 * mean(O > Y)``.

Tensors/arrays in, numbers out; no files. Maps for clips are averaged over time before the
2-D comparison with the regions (regions are per item, not per frame).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from model.attribution import GradCAM
from model.inference import frames_to_tensor
from model.training.metrics import bootstrap_macro_f1, macro_f1, per_class_f1, predictions
from model.weights import InputSpec

__all__ = [
    "LocalisationResult",
    "average_drop_increase",
    "average_precision",
    "binarise_cam",
    "bootstrap_macro_f1",
    "bootstrap_mean",
    "class_targets",
    "grad_cam_maps",
    "localisation",
    "localisation_iou",
    "macro_f1",
    "mean_average_precision",
    "paired_bootstrap_macro_f1",
    "paired_bootstrap_mean",
    "per_class_f1",
    "pointing_game",
    "predict_probs",
    "region_mask",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def class_targets(labels: np.ndarray, *, multi_label: bool) -> np.ndarray:
    """Targets for the metric functions: multi-hot ``[N, K]`` (NaN -> 0) or argmax ``[N]``."""
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0)
    return y if multi_label else y.argmax(axis=1)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision per class, float64 ``[K]`` (NaN for a class without positives).

    ``scores`` ``[N, K]`` (any monotone score: logits or probabilities, the same transform for
    every item: the released code's bug was a sigmoid on the first batch only); ``targets``
    multi-hot ``[N, K]`` or indices ``[N]``. Non-interpolated AP as scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the *distinct* scores taken as
    thresholds, so items with tied scores enter together and the result does not depend on their
    order (ranking ties one by one in input order would).
    """
    s = np.asarray(scores, dtype=np.float64)
    n, k = s.shape
    t = _bool_targets(targets, k)
    out = np.full(k, np.nan)
    for c in range(k):
        if t[:, c].any():
            out[c] = _binary_average_precision(s[:, c], t[:, c])
    return out


def _binary_average_precision(score: np.ndarray, hit: np.ndarray) -> float:
    """AP of one class (at least one positive), ties grouped into one threshold."""
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], hit[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]  # end of each tie block
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean of :func:`average_precision` over classes with positives (0.0 if none)."""
    ap = average_precision(scores, targets)
    defined = ap[~np.isnan(ap)]
    return float(defined.mean()) if defined.size else 0.0


def _resample_counts(n: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """``w[r, i]`` = how often item i is drawn in bootstrap resample r (``[runs, n]``)."""
    draws = rng.integers(0, n, size=(runs, n))
    weights = np.zeros((runs, n), dtype=np.float64)
    np.add.at(weights, (np.repeat(np.arange(runs), n), draws.ravel()), 1.0)
    return weights


def _macro_f1_weighted(pred: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 for each row of item weights ``[R, N]`` at once: ``[R]``."""
    tp = weights @ (pred & target).astype(np.float64)
    fp = weights @ (pred & ~target).astype(np.float64)
    fn = weights @ (~pred & target).astype(np.float64)
    denom = tp + (fp + fn) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)
    defined = (~np.isnan(f1)).sum(axis=1)
    return np.where(defined > 0, np.nansum(f1, axis=1) / np.maximum(defined, 1), 0.0)


def _bool_targets(targets: np.ndarray, k: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim == 1:
        out = np.zeros((t.shape[0], k), dtype=bool)
        out[np.arange(t.shape[0]), t.astype(np.int64)] = True
        return out
    return t > 0.5


def paired_bootstrap_macro_f1(
    probs_a: np.ndarray | Sequence[np.ndarray],
    probs_b: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    multi_label: bool = True,
    runs: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of ``macro_f1(B) - macro_f1(A)`` on the same test items.

    ``probs_a``/``probs_b``: ``[N, K]`` each, or equally long lists of ``[N, K]`` (one per
    training seed, all scored on the same test items): the statistic is then the mean over
    seeds of the per-seed difference, and each bootstrap resample applies the same items to
    every seed (so the interval reflects test-set sampling; the seed spread is reported apart).
    Returns ``{"a", "b", "diff", "low", "high", "p_le_zero", "seeds_low", "seeds_high",
    "seeds_p_le_zero"}`` where ``a``/``b`` are the (seed-averaged) macro-F1 values,
    ``low``/``high`` the percentile interval of the difference over test items and
    ``p_le_zero`` the fraction of resamples with a difference <= 0. The ``seeds_*`` entries come
    from a two-level bootstrap that also resamples the training seeds (:func:`_seed_resample`):
    with several seeds it is the honest interval when one lucky seed carries the mean.
    """
    list_a = [probs_a] if isinstance(probs_a, np.ndarray) else list(probs_a)
    list_b = [probs_b] if isinstance(probs_b, np.ndarray) else list(probs_b)
    if len(list_a) != len(list_b) or not list_a:
        raise ValueError("need the same (non-zero) number of prediction sets for A and B")
    k = np.asarray(list_a[0]).shape[1]
    target = _bool_targets(targets, k)
    n = target.shape[0]
    rng = np.random.default_rng(seed)
    weights = _resample_counts(n, runs, rng) if n else np.zeros((runs, 0))
    point_w = np.ones((1, n))
    per_seed = np.zeros((len(list_a), runs))  # [S, R]: each seed's difference under each resample
    a_vals, b_vals = [], []
    for s, (pa, pb) in enumerate(zip(list_a, list_b, strict=True)):
        pred_a = predictions(pa, multi_label=multi_label)
        pred_b = predictions(pb, multi_label=multi_label)
        a_vals.append(float(_macro_f1_weighted(pred_a, target, point_w)[0]))
        b_vals.append(float(_macro_f1_weighted(pred_b, target, point_w)[0]))
        per_seed[s] = _macro_f1_weighted(pred_b, target, weights) - _macro_f1_weighted(pred_a, target, weights)
    diffs = per_seed.mean(axis=0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha]) if runs else (np.nan, np.nan)
    a, b = float(np.mean(a_vals)), float(np.mean(b_vals))
    two_level = _seed_resample(per_seed, rng)
    s_low, s_high = np.quantile(two_level, [alpha, 1.0 - alpha]) if two_level.size else (np.nan, np.nan)
    return {
        "a": a,
        "b": b,
        "diff": b - a,
        "low": float(low),
        "high": float(high),
        "p_le_zero": float(np.mean(diffs <= 0)) if runs else float("nan"),
        "seeds_low": float(s_low),
        "seeds_high": float(s_high),
        "seeds_p_le_zero": float(np.mean(two_level <= 0)) if two_level.size else float("nan"),
    }


def _seed_resample(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-level bootstrap: ``[S, R]`` per-seed statistics under item resample r -> ``[R]``.

    Resample r also draws S training seeds with replacement and averages their statistics under
    that same item resample, so the interval covers both sources of chance: which test items
    were drawn and which training run (labelled subset, initialisation) a seed happened to give.
    With one seed it equals the item-level bootstrap. NaN entries (a seed with no usable item in
    a resample) are left out of the average.
    """
    s, runs = per_seed.shape
    if s == 1:
        vals = per_seed[0]
        return vals[np.isfinite(vals)]
    if s == 0 or runs == 0:
        return np.zeros(0)
    counts = _resample_counts(s, runs, rng)  # [R, S]
    vals = per_seed.T  # [R, S]
    finite = np.isfinite(vals)
    w = counts * finite
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w * np.where(finite, vals, 0.0)).sum(axis=1) / w.sum(axis=1)
    return out[np.isfinite(out)]


def bootstrap_mean(
    values: np.ndarray, *, runs: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of the finite entries of ``values`` with a percentile bootstrap CI ``(mean, low, high)``.

    NaN entries (items a metric is undefined for) are dropped first; all NaN gives NaNs.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(runs, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(v.mean()), float(low), float(high)


def paired_bootstrap_mean(
    a: np.ndarray | Sequence[np.ndarray],
    b: np.ndarray | Sequence[np.ndarray],
    *,
    runs: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of ``mean(b - a)`` over the items where both are finite.

    For per-item localisation scores (IoU, pointing hits) of two models: ATCON.md averages mIoU
    over items where both models predict a true class. ``a``/``b`` are ``[N]`` arrays or equal
    lists of them (one per training seed, same N test items): the statistic is the mean over
    seeds of each seed's mean difference, and each resample draws the same items for every
    seed. Returns ``{"a", "b", "diff", "low", "high", "seeds_low", "seeds_high", "n"}`` (``n`` =
    item/seed pairs used; ``seeds_*``: the two-level interval that also resamples seeds, as in
    :func:`paired_bootstrap_macro_f1`).
    """
    list_a = [a] if isinstance(a, np.ndarray) else list(a)
    list_b = [b] if isinstance(b, np.ndarray) else list(b)
    if len(list_a) != len(list_b) or not list_a:
        raise ValueError("need the same (non-zero) number of score sets for A and B")
    xa = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in list_a])  # [S, N]
    xb = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in list_b])
    both = np.isfinite(xa) & np.isfinite(xb)
    nan = float("nan")
    if not both.any():
        return {"a": nan, "b": nan, "diff": nan, "low": nan, "high": nan, "n": 0}
    da, db = np.where(both, xa, 0.0), np.where(both, xb, 0.0)

    def per_seed_means(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # w: [R, N] item weights -> each seed's mean under each resample: [R, S] each
        cnt = w @ both.T.astype(np.float64)  # [R, S]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ da.T) / cnt, (w @ db.T) / cnt

    def over_seeds(m: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample may miss every usable item
            return np.nanmean(m, axis=1)

    n = xa.shape[1]
    pa, pb = per_seed_means(np.ones((1, n)))
    rng = np.random.default_rng(seed)
    ra, rb = per_seed_means(_resample_counts(n, runs, rng))
    diffs = over_seeds(rb) - over_seeds(ra)
    diffs = diffs[np.isfinite(diffs)]
    two_level = _seed_resample((rb - ra).T, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha]) if diffs.size else (nan, nan)
    s_low, s_high = np.quantile(two_level, [alpha, 1.0 - alpha]) if two_level.size else (nan, nan)
    a_mean, b_mean = float(over_seeds(pa)[0]), float(over_seeds(pb)[0])
    return {
        "a": a_mean,
        "b": b_mean,
        "diff": b_mean - a_mean,
        "low": float(low),
        "high": float(high),
        "seeds_low": float(s_low),
        "seeds_high": float(s_high),
        "n": int(both.sum()),
    }


# --------------------------------------------------------------------------------------------
# Predictions and maps of a model on TrainingData-like inputs
# --------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to_input(frames: np.ndarray, spec: InputSpec) -> Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> float ``[B, 3, T, H, W]`` normalised (T = 1 is kept)."""
    return frames_to_tensor(frames, spec)


def predict_probs(
    model: nn.Module, frames: object, spec: InputSpec, *, batch_size: int = 64, device: torch.device | None = None
) -> np.ndarray:
    """Probabilities ``[N, K]`` (sigmoid or softmax per ``spec.multi_label``) in eval mode.

    ``frames``: anything indexable by an index array giving uint8 ``[B, T, H, W, 3]`` (an
    ndarray or :class:`~model.training.datasets.LazyFrames`). The model's mode is restored.
    """
    n = len(frames)  # type: ignore[arg-type]
    dev = device or _model_device(model)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                idx = np.arange(i, min(i + batch_size, n))
                logits = model(_to_input(np.asarray(frames[idx]), spec).to(dev)).float()  # type: ignore[index]
                p = torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=1)
                out.append(p.cpu().numpy())
    finally:
        model.train(was_training)
    k = out[0].shape[1] if out else 0
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


def grad_cam_maps(
    model: nn.Module,
    frames: object,
    spec: InputSpec,
    targets: np.ndarray,
    *,
    layer: nn.Module | None = None,
    per_time_step: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM (ReLU, upsampled to the input, time-averaged for clips), float32 ``[N, H, W]``.

    ``targets``: int ``[N]`` class per item. Model in eval mode during the call (restored).
    """
    from model.nets import default_target_layer

    cam = GradCAM(model, layer if layer is not None else default_target_layer(model))
    dev = _model_device(model)
    n = len(frames)  # type: ignore[arg-type]
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for i in range(0, n, batch_size):
            idx = np.arange(i, min(i + batch_size, n))
            x = _to_input(np.asarray(frames[idx]), spec).to(dev)  # type: ignore[index]
            if x.shape[2] == 1:
                x = x[:, :, 0]  # images: [B, 3, H, W]
            m = cam.attribute(x, torch.as_tensor(targets[idx], device=dev), per_time_step=per_time_step)
            if m.dim() == 4:
                m = m.mean(dim=1)
            out.append(m.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        h, w = spec.size[1], spec.size[0]
        return np.zeros((0, h, w), dtype=np.float32)
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Localisation
# --------------------------------------------------------------------------------------------


def region_mask(regions: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: union of the rectangles of class ``k`` in ``regions`` ``[M, 5]``.

    Rows are ``(class, x0, y0, x1, y1)`` in pixels, x1/y1 exclusive; a pixel belongs to a box
    when its centre does.
    """
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    if regions is None or len(regions) == 0:
        return out
    ys = np.arange(h) + 0.5
    xs = np.arange(w) + 0.5
    for row in np.asarray(regions).reshape(-1, 5):
        if int(row[0]) != k:
            continue
        _, x0, y0, x1, y1 = row
        out |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return out


def binarise_cam(cam: np.ndarray) -> np.ndarray:
    """ATCON.md's protocol for one map ``[H, W]``: clip above mean + 2 std, min-max, > 0.5.

    A constant map gives an empty mask.
    """
    m = np.asarray(cam, dtype=np.float64)
    m = np.minimum(m, m.mean() + 2.0 * m.std())
    lo, hi = m.min(), m.max()
    if not hi > lo:
        return np.zeros(m.shape, dtype=bool)
    return (m - lo) / (hi - lo) > 0.5


def localisation_iou(
    cams: np.ndarray, predicted: np.ndarray, labels: np.ndarray, regions: Sequence[np.ndarray]
) -> np.ndarray:
    """Per-item IoU ``[N]`` of the binarised map of the predicted class with its region.

    NaN where the predicted class is not a true class of the item or has no region there.
    ``cams`` ``[N, H, W]`` are the maps *of the predicted class*.
    """
    n = cams.shape[0]
    out = np.full(n, np.nan)
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0)
    for i in range(n):
        k = int(predicted[i])
        if y[i, k] < 0.5:
            continue
        gt = region_mask(regions[i], k, cams.shape[1:])
        if not gt.any():
            continue
        pred = binarise_cam(cams[i])
        union = np.logical_or(pred, gt).sum()
        out[i] = float(np.logical_and(pred, gt).sum() / union) if union else 0.0
    return out


def pointing_game(cams: np.ndarray, classes: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """Per-trial hit (1.0 / 0.0) ``[N]``: is the maximum of ``cams[i]`` inside the region of
    ``classes[i]``? NaN when that class has no region in item i. (Ties: the first maximum.)"""
    n = cams.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        gt = region_mask(regions[i], int(classes[i]), cams.shape[1:])
        if not gt.any():
            continue
        r, c = np.unravel_index(int(np.argmax(cams[i])), cams.shape[1:])
        out[i] = float(gt[r, c])
    return out


@dataclass
class LocalisationResult:
    """Per-item localisation scores of one model on one test set.

    ``iou`` ``[N]`` (NaN where undefined, see :func:`localisation_iou`), ``pointing`` ``[P]`` hits
    over (item, true class) trials, ``predicted`` ``[N]`` top-1 classes.
    """

    iou: np.ndarray
    pointing: np.ndarray
    predicted: np.ndarray

    def summary(self) -> dict[str, float]:
        iou = self.iou[np.isfinite(self.iou)]
        hits = self.pointing[np.isfinite(self.pointing)]
        return {
            "miou": float(iou.mean()) if iou.size else float("nan"),
            "miou_items": int(iou.size),
            "pointing_game": float(hits.mean()) if hits.size else float("nan"),
            "pointing_trials": int(hits.size),
        }


def localisation(
    model: nn.Module,
    frames: object,
    labels: np.ndarray,
    regions: Sequence[np.ndarray],
    spec: InputSpec,
    *,
    probs: np.ndarray | None = None,
    layer: nn.Module | None = None,
    per_time_step: bool = True,
    batch_size: int = 32,
) -> LocalisationResult:
    """mIoU inputs and pointing-game trials of ``model`` on items with ground-truth regions.

    Grad-CAM of the top-1 class for IoU; Grad-CAM of every true class that has a region for the
    pointing game (one batched pass per class).
    """
    if probs is None:
        probs = predict_probs(model, frames, spec, batch_size=batch_size)
    predicted = probs.argmax(axis=1)
    cams = grad_cam_maps(
        model, frames, spec, predicted, layer=layer, per_time_step=per_time_step, batch_size=batch_size
    )
    iou = localisation_iou(cams, predicted, labels, regions)
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0) > 0.5
    hits: list[np.ndarray] = []
    for k in range(y.shape[1]):
        items = np.flatnonzero(
            y[:, k] & np.array([bool((np.asarray(r)[:, 0] == k).any()) if len(r) else False for r in regions])
        )
        if items.size == 0:
            continue
        sub = _take(frames, items)
        maps = grad_cam_maps(model, sub, spec, np.full(items.size, k), layer=layer, per_time_step=per_time_step)
        hits.append(pointing_game(maps, np.full(items.size, k), [regions[i] for i in items]))
    pointing = np.concatenate(hits) if hits else np.zeros(0)
    return LocalisationResult(iou=iou, pointing=pointing, predicted=predicted)


class _Take:
    """Index view of a frame store restricted to ``items`` (no copy until indexed)."""

    def __init__(self, frames: object, items: np.ndarray) -> None:
        self._frames, self._items = frames, items

    def __len__(self) -> int:
        return int(self._items.size)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._frames[self._items[np.asarray(idx)]])  # type: ignore[index]


def _take(frames: object, items: np.ndarray) -> _Take:
    return _Take(frames, items)


# --------------------------------------------------------------------------------------------
# Faithfulness: Average Drop / Increase in Confidence
# --------------------------------------------------------------------------------------------


def average_drop_increase(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    multi_label: bool,
    keep_fraction: float = 1.0,
) -> tuple[float, float]:
    """``(Average Drop %, Increase in Confidence %)`` of explanation maps (Grad-CAM++ eq. 19-20).

    Args:
        inputs: ``[N, C, H, W]`` or ``[N, C, T, H, W]`` normalised model inputs.
        maps: ``[N, H, W]`` / ``[N, T, H, W]`` explanation maps (any scale; min-max normalised
            per item here).
        targets: ``int64 [N]`` explained class.
        keep_fraction: 1.0 multiplies the input by the normalised map (Grad-CAM++); below 1 only
            the top ``keep_fraction`` of the map's pixels are kept (TAME's 50 % / 15 %).

    The masked input is ``x * E`` in normalised units, i.e. removed pixels become the dataset
    mean colour rather than black, which avoids scoring an out-of-distribution black image.
    """
    flat = maps.detach().float().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    e = (flat - lo) / (hi - lo).clamp_min(1e-12)
    if keep_fraction < 1.0:
        keep = max(1, int(round(keep_fraction * e.shape[1])))
        thresh = e.topk(keep, dim=1).values[:, -1:]
        e = e * (e >= thresh)
    e = e.view(maps.shape).unsqueeze(1)  # broadcast over colour channels
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits_full, logits_masked = model(inputs), model(inputs * e)
    finally:
        model.train(was_training)

    def prob(logits: Tensor) -> Tensor:
        p = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
        return p.gather(1, targets.view(-1, 1)).squeeze(1)

    y, o = prob(logits_full.float()), prob(logits_masked.float())
    drop = (torch.clamp(y - o, min=0) / y.clamp_min(1e-12)).mean().item() * 100.0
    increase = (o > y).float().mean().item() * 100.0
    return float(drop), float(increase)
