"""Cluster bootstrap of the paired macro-F1 difference: resample videos, crossed with seeds.

Test clips cut from one video are not independent (neighbouring clips show the same scene, the
same patient, often the same event), so resampling *clips* treats a video's 30 correlated clips
as 30 pieces of evidence and gives intervals that are too narrow. This bootstrap resamples the
unit that was actually sampled, the video (``TrainingData.groups``), and independently the
training seeds: each run draws G videos and S seeds with replacement, scores every drawn seed's
paired difference ``macro_F1(B) - macro_F1(A)`` on the items of the drawn videos (an item counts
as often as its video was drawn), and averages over the drawn seeds. With one item per group it
is the item-level two-level bootstrap of :func:`~model.training.evaluation.paired_bootstrap_macro_f1`
(for the same ``seed``, the very same numbers).

Vectorised: one ``[R, N]`` matrix of item weights (video counts spread to their clips) and one
matrix product per seed and model; 1,000 runs over a few thousand clips take milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from model.training.evaluation import _bool_targets, _macro_f1_weighted, _seed_resample
from model.training.metrics import predictions

__all__ = ["group_resample_weights", "paired_cluster_bootstrap_macro_f1"]

logger = logging.getLogger(__name__)


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
    target = _bool_targets(targets, np.asarray(list_a[0]).shape[1])
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
