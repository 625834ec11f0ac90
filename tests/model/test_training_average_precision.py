"""Issue 9.7: average precision with tied scores, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from model.training.metrics import average_precision, mean_average_precision


def test_a_tie_is_one_threshold_whatever_the_item_order() -> None:
    # one positive and one negative at the same score: precision 1/2 at recall 1, in either order
    for targets in ([[1], [0]], [[0], [1]]):
        np.testing.assert_allclose(average_precision(np.array([[0.5], [0.5]]), np.array(targets)), [0.5])
    # 0.9 (+), then a tie block {0.4 +, 0.4 -}: 1 * 1/2 + 2/3 * 1/2
    scores, targets = np.array([[0.9], [0.4], [0.4]]), np.array([[1], [0], [1]])
    np.testing.assert_allclose(average_precision(scores, targets), [1 / 2 + (2 / 3) / 2])


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 60, 4
    targets = (rng.random((n, k)) < 0.3).astype(np.int64)
    targets[0] = 1  # every class has a positive
    scores = np.round(np.clip(rng.normal(0.4 + 0.2 * targets, 0.2), 0, 1), 1)  # about 11 distinct values
    expected = [average_precision_score(targets[:, c], scores[:, c]) for c in range(k)]
    np.testing.assert_allclose(average_precision(scores, targets), expected, rtol=0, atol=1e-12)
    for _ in range(5):  # the order of the items does not matter
        perm = rng.permutation(n)
        np.testing.assert_allclose(average_precision(scores[perm], targets[perm]), expected, rtol=0, atol=1e-12)
    assert mean_average_precision(scores, targets) == pytest.approx(np.mean(expected))


def test_single_label_indices_and_classes_without_positives() -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((40, 3)), 1)
    labels = rng.integers(0, 2, 40)  # class 2 never occurs
    ap = average_precision(scores, labels)
    for c in (0, 1):
        assert ap[c] == pytest.approx(average_precision_score(labels == c, scores[:, c]))
    assert np.isnan(ap[2])  # undefined, not 0: mean_average_precision leaves it out
    assert mean_average_precision(scores, labels) == pytest.approx(np.nanmean(ap[:2]))
    assert mean_average_precision(scores, np.zeros((40, 3))) == 0.0
