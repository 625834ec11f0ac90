"""Classification metrics as specified in ATCON.md ("Evaluation").

Per class ``F1 = TP / (TP + (FP + FN) / 2)``; macro-F1 is the mean over classes. Multi-label
predictions are ``probability > threshold`` (0.5) per class; single-label predictions are the
argmax. Also mean average precision (non-interpolated, as scikit-learn's
``average_precision_score``) and :func:`class_targets`, which turns ``TrainingData`` labels into
the targets these functions take. Bootstrap intervals of paired differences are in
:mod:`model.training.bootstrap`. Arrays in, numbers out: no torch needed.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "average_precision",
    "bool_targets",
    "bootstrap_macro_f1",
    "class_targets",
    "confusion_counts",
    "macro_f1",
    "mean_average_precision",
    "per_class_f1",
    "predictions",
]


def predictions(probs: np.ndarray, *, multi_label: bool = True, threshold: float = 0.5) -> np.ndarray:
    """Boolean predictions ``[N, K]`` from probabilities ``[N, K]``.

    Multi-label: ``probs > threshold`` per class. Single-label: one-hot of the argmax.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities [N, K], got shape {p.shape}")
    if multi_label:
        return p > threshold
    out = np.zeros(p.shape, dtype=bool)
    if p.shape[0]:
        out[np.arange(p.shape[0]), p.argmax(axis=1)] = True
    return out


def bool_targets(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean targets ``[N, K]`` from multi-hot ``[N, K]`` or class indices ``[N]``."""
    t = np.asarray(targets)
    if t.ndim == 1:
        out = np.zeros((t.shape[0], num_classes), dtype=bool)
        out[np.arange(t.shape[0]), t.astype(np.int64)] = True
        return out
    if t.ndim != 2 or t.shape[1] != num_classes:
        raise ValueError(f"targets {t.shape} do not match {num_classes} classes")
    return t > 0.5


def confusion_counts(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (TP, FP, FN) counts, each int64 ``[K]``, from boolean ``[N, K]`` arrays."""
    tp = np.sum(pred & target, axis=0, dtype=np.int64)
    fp = np.sum(pred & ~target, axis=0, dtype=np.int64)
    fn = np.sum(~pred & target, axis=0, dtype=np.int64)
    return tp, fp, fn


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 per class; a class never present and never predicted has no F1 (NaN)."""
    denom = tp + (fp + fn) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def per_class_f1(
    probs: np.ndarray, targets: np.ndarray, *, multi_label: bool = True, threshold: float = 0.5
) -> np.ndarray:
    """F1 per class, float64 ``[K]``; NaN for a class with no positives and no predictions.

    ``probs``: probabilities ``[N, K]`` (sigmoid or softmax outputs); ``targets``: multi-hot
    ``[N, K]`` or class indices ``[N]``.
    """
    pred = predictions(probs, multi_label=multi_label, threshold=threshold)
    target = bool_targets(targets, pred.shape[1])
    if target.shape[0] != pred.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions but {target.shape[0]} targets")
    return _f1_from_counts(*confusion_counts(pred, target))


def macro_f1(probs: np.ndarray, targets: np.ndarray, *, multi_label: bool = True, threshold: float = 0.5) -> float:
    """Mean of :func:`per_class_f1` over classes that are present or predicted (0.0 if none).

    Classes with undefined F1 (never present, never predicted) are left out of the mean rather
    than counted as 0 or 1, so a validation split that lacks a rare class is not distorted.
    """
    f1 = per_class_f1(probs, targets, multi_label=multi_label, threshold=threshold)
    defined = f1[~np.isnan(f1)]
    return float(defined.mean()) if defined.size else 0.0


def bootstrap_macro_f1(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    multi_label: bool = True,
    threshold: float = 0.5,
    runs: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Macro-F1 with a percentile bootstrap confidence interval: ``(value, low, high)``.

    Test items are resampled with replacement ``runs`` times (ATCON.md: 1,000 runs). Counts are
    computed for all resamples at once from per-item contributions, so the cost is one
    ``[runs, N] @ [N, K]`` product instead of ``runs`` Python-level metric calls.
    """
    pred = predictions(probs, multi_label=multi_label, threshold=threshold)
    target = bool_targets(targets, pred.shape[1])
    n = pred.shape[0]
    value = macro_f1(probs, targets, multi_label=multi_label, threshold=threshold)
    if n == 0:
        return value, value, value
    rng = np.random.default_rng(seed)
    # weights[r, i] = how many times item i is drawn in resample r
    draws = rng.integers(0, n, size=(runs, n))
    weights = np.zeros((runs, n), dtype=np.float64)
    np.add.at(weights, (np.repeat(np.arange(runs), n), draws.ravel()), 1.0)
    tp = weights @ (pred & target).astype(np.float64)
    fp = weights @ (pred & ~target).astype(np.float64)
    fn = weights @ (~pred & target).astype(np.float64)
    f1 = _f1_from_counts(tp, fp, fn)  # [runs, K]
    defined = (~np.isnan(f1)).sum(axis=1)
    macro = np.where(defined > 0, np.nansum(f1, axis=1) / np.maximum(defined, 1), 0.0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(macro, [alpha, 1.0 - alpha])
    return value, float(low), float(high)


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
    t = bool_targets(targets, k)
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
