"""Bootstrap confidence intervals for the ATCON experiments (ATCON.md "Evaluation": 1,000 runs).

Percentile bootstrap intervals over resampled test items, the *paired* bootstrap of a difference
(both models scored on the same resampled items, which is what makes a small lift detectable)
and its two-level variant that also resamples the training seeds. (The single-model
:func:`~model.training.metrics.bootstrap_macro_f1` lives with the F1 family in
:mod:`model.training.metrics`.)

Cluster bootstrap (:func:`paired_cluster_bootstrap_macro_f1`): test clips cut from one video are
not independent (neighbouring clips show the same scene, the same patient, often the same event),
so resampling *clips* treats a video's 30 correlated clips as 30 pieces of evidence and gives
intervals that are too narrow. It resamples the unit that was actually sampled, the video
(``TrainingData.groups``), and independently the training seeds: each run draws G videos and S
seeds with replacement, scores every drawn seed's paired difference ``macro_F1(B) - macro_F1(A)``
on the items of the drawn videos (an item counts as often as its video was drawn), and averages
over the drawn seeds. With one item per group it is the item-level two-level bootstrap of
:func:`paired_bootstrap_macro_f1` (for the same ``seed``, the very same numbers).

Vectorised: one ``[R, N]`` matrix of item weights (video counts spread to their clips) and one
matrix product per seed and model; 1,000 runs over a few thousand clips take milliseconds.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from model.training.metrics import bool_targets, predictions

__all__ = [
    "bootstrap_mean",
    "group_resample_weights",
    "paired_bootstrap_macro_f1",
    "paired_bootstrap_mean",
    "paired_cluster_bootstrap_macro_f1",
]

logger = logging.getLogger(__name__)


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
    target = bool_targets(targets, k)
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
# Cluster bootstrap: resample videos, crossed with seeds
# --------------------------------------------------------------------------------------------


def group_resample_weights(groups: np.ndarray, runs: int, rng: np.random.Generator) -> np.ndarray:
    """``w[r, i]`` = how often item i's group is drawn in resample r, float64 ``[runs, N]``.

    Each resample draws as many groups as there are, with replacement; groups are numbered in
    sorted order of their ids, so ``groups = arange(N)`` draws exactly what an item bootstrap
    with the same generator draws.
    """
    _, inverse = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    g = int(inverse.max()) + 1 if inverse.size else 0
    if g == 0:
        return np.zeros((runs, 0))
    draws = rng.integers(0, g, size=(runs, g))
    flat = (draws + g * np.arange(runs)[:, None]).ravel()
    counts = np.bincount(flat, minlength=runs * g).reshape(runs, g).astype(np.float64)
    return counts[:, inverse]


def paired_cluster_bootstrap_macro_f1(
    probs_a: np.ndarray | Sequence[np.ndarray],
    probs_b: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    multi_label: bool = True,
    runs: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int]:
    """Seeds x videos bootstrap of ``macro_F1(B) - macro_F1(A)`` (module docstring).

    ``probs_a``/``probs_b``: ``[N, K]`` or equal lists of them (one per training seed, same test
    items); ``groups``: ``[N]`` video / recording ids (None: every item its own group). Returns
    ``{"diff", "low", "high", "p_le_zero", "groups", "seeds"}``: the seed-averaged difference, its
    percentile interval, the share of runs with a difference <= 0, and the numbers of groups and
    seeds resampled. With a single group the interval only reflects the seeds: one video cannot
    tell how much another would differ (logged).
    """
    list_a = [probs_a] if isinstance(probs_a, np.ndarray) else list(probs_a)
    list_b = [probs_b] if isinstance(probs_b, np.ndarray) else list(probs_b)
    if len(list_a) != len(list_b) or not list_a:
        raise ValueError("need the same (non-zero) number of prediction sets for A and B")
    target = bool_targets(targets, np.asarray(list_a[0]).shape[1])
    n = target.shape[0]
    g = np.arange(n) if groups is None else np.asarray(groups).reshape(-1)
    if g.size != n:
        raise ValueError(f"groups has {g.size} entries for {n} items")
    n_groups = int(np.unique(g).size)
    if n_groups < 2:
        logger.warning("cluster bootstrap over %d group(s): the interval reflects the seeds only", n_groups)
    rng = np.random.default_rng(seed)
    weights = group_resample_weights(g, runs, rng)
    point = np.ones((1, n))
    per_seed = np.zeros((len(list_a), runs))  # [S, R]
    diff = 0.0
    for s, (pa, pb) in enumerate(zip(list_a, list_b, strict=True)):
        pred_a, pred_b = predictions(pa, multi_label=multi_label), predictions(pb, multi_label=multi_label)
        per_seed[s] = _macro_f1_weighted(pred_b, target, weights) - _macro_f1_weighted(pred_a, target, weights)
        diff += float(_macro_f1_weighted(pred_b, target, point)[0] - _macro_f1_weighted(pred_a, target, point)[0])
    crossed = _seed_resample(per_seed, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(crossed, [alpha, 1.0 - alpha]) if crossed.size else (np.nan, np.nan)
    return {
        "diff": diff / len(list_a),
        "low": float(low),
        "high": float(high),
        "p_le_zero": float(np.mean(crossed <= 0)) if crossed.size else float("nan"),
        "groups": n_groups,
        "seeds": len(list_a),
    }
