"""Evaluation metrics on hand-computed examples: F1, mAP, bootstrap CIs, mIoU, pointing game, AD/IC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.training.bootstrap import bootstrap_mean, paired_bootstrap_macro_f1, paired_bootstrap_mean
from model.training.localisation import (
    average_drop_increase,
    binarise_cam,
    localisation,
    localisation_iou,
    pointing_game,
    region_mask,
)
from model.training.metrics import average_precision, macro_f1, mean_average_precision
from model.weights import InputSpec


def test_macro_f1_rules() -> None:
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.1]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert macro_f1(probs, targets) == pytest.approx((0.5 + 1.0) / 2)  # sigmoid > 0.5 per class
    # argmax for single-label: rows -> 0, 1, 1, 0 vs targets 0, 1, 0, 0
    assert macro_f1(probs, np.array([0, 1, 0, 0]), multi_label=False) == pytest.approx((2 / 2.5 + 1 / 1.5) / 2)


def test_average_precision_by_hand() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.9]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # class 0 ranking: + - + - -> precisions at hits 1/1, 2/3 -> AP = 5/6
    # class 1 ranking (0.9, 0.7, ...): - + -> AP = 1/2
    np.testing.assert_allclose(average_precision(scores, targets), [5 / 6, 1 / 2])
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert np.isnan(average_precision(scores, np.zeros((4, 2)))).all()
    # the same transform for every item: logits and probabilities rank identically
    np.testing.assert_allclose(average_precision(np.log(scores), targets), average_precision(scores, targets))


def _good_and_noisy(n: int, flip: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(targets [n], perfect probs, probs with a fraction ``flip`` of items misclassified)``, 3 classes."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    good = np.eye(3)[targets] * 0.8 + 0.1
    noisy = good.copy()
    flipped = rng.random(n) < flip
    noisy[flipped] = np.eye(3)[(targets[flipped] + 1) % 3] * 0.8 + 0.1
    return targets, good, noisy


def test_paired_bootstrap_of_macro_f1() -> None:
    targets, good, noisy = _good_and_noisy(300, 0.3, seed=0)
    same = paired_bootstrap_macro_f1(noisy, noisy, targets, multi_label=False, runs=200)
    assert same["diff"] == 0 and same["low"] == 0 and same["high"] == 0
    better = paired_bootstrap_macro_f1(noisy, good, targets, multi_label=False, runs=200)
    assert better["b"] == 1.0 and better["low"] > 0.2 and better["diff"] == pytest.approx(1.0 - better["a"])
    assert better["low"] <= better["diff"] <= better["high"] and better["p_le_zero"] == 0
    # several seeds: the statistic is the mean of the per-seed differences
    multi = paired_bootstrap_macro_f1([noisy, good], [good, good], targets, multi_label=False, runs=100)
    assert multi["diff"] == pytest.approx(better["diff"] / 2)


def test_two_level_bootstrap_does_not_let_one_lucky_seed_carry_the_mean() -> None:
    """Four seeds with no change and one with a large gain: over test items alone the mean gain
    looks certain; resampling the seeds too puts zero inside the interval."""
    targets, good, noisy = _good_and_noisy(400, 0.4, seed=1)
    res = paired_bootstrap_macro_f1([noisy] * 5, [noisy] * 4 + [good], targets, multi_label=False, runs=400)
    assert res["low"] > 0.05  # items only: "significant"
    assert res["seeds_low"] <= 0.0 < res["diff"] < res["seeds_high"]
    assert 0.1 < res["seeds_p_le_zero"] < 0.5  # P(no lucky seed drawn among 5) = (4/5)^5 = 0.33
    single = paired_bootstrap_macro_f1(noisy, good, targets, multi_label=False, runs=200)
    assert single["seeds_low"] == single["low"] and single["seeds_high"] == single["high"]
    m = paired_bootstrap_mean([np.zeros(50)] * 4 + [np.zeros(50)], [np.zeros(50)] * 4 + [np.ones(50)], runs=300)
    assert m["diff"] == pytest.approx(0.2) and m["low"] == pytest.approx(0.2)
    assert m["seeds_low"] == 0.0 and m["seeds_high"] > 0.2


def test_bootstrap_means() -> None:
    mean, low, high = bootstrap_mean(np.array([1.0, 2.0, np.nan, 3.0]), runs=500)
    assert mean == 2.0 and 1.0 <= low < 2.0 < high <= 3.0
    res = paired_bootstrap_mean(np.array([0.2, np.nan, 0.4, 0.1]), np.array([0.3, 0.9, np.nan, 0.3]), runs=200)
    assert res["n"] == 2 and res["diff"] == pytest.approx(0.15) and res["a"] == pytest.approx(0.15)


def test_region_mask_and_cam_binarisation() -> None:
    regions = np.array([[1, 0, 0, 2, 2], [1, 3, 3, 4, 4], [0, 0, 0, 4, 4]], dtype=np.float32)
    mask = region_mask(regions, 1, (4, 4))
    assert mask.sum() == 5 and mask[0, 0] and mask[3, 3] and not mask[2, 2]  # union of two rectangles
    cam = np.zeros((20, 20))
    cam[:6, :6] = 1.0
    cam[15, 15] = 3.0  # a hot pixel: mean 0.0975, std 0.321 -> everything above 0.74 is clipped
    binary = binarise_cam(cam)
    assert binary[:6, :6].all() and binary[15, 15] and binary.sum() == 37
    # without the clipping the block would sit at 1/3 of the range and be lost
    assert ((cam - cam.min()) / (cam.max() - cam.min()) > 0.5).sum() == 1
    assert not binarise_cam(np.ones((3, 3))).any()


def test_localisation_iou_and_pointing_game_by_hand() -> None:
    cams = np.zeros((3, 4, 4))
    cams[0, :2, :2] = 1.0  # exactly the region
    cams[1, :2, :4] = 1.0  # twice the region: IoU 4/8
    cams[2, 3, 3] = 1.0
    regions = [np.array([[0, 0, 0, 2, 2]], dtype=np.float32)] * 3
    labels = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    iou = localisation_iou(cams, np.array([0, 0, 0]), labels, regions)
    np.testing.assert_allclose(iou[:2], [1.0, 0.5])
    assert np.isnan(iou[2])  # predicted class 0 is not a true class of item 2
    hits = pointing_game(cams, np.array([0, 0, 0]), regions)
    np.testing.assert_array_equal(hits, [1.0, 1.0, 0.0])
    assert np.isnan(pointing_game(cams[:1], np.array([1]), regions[:1])[0])  # no region of class 1


class _Spotlight(nn.Module):
    """Logit of class k = mean of channel 0 over quadrant k (left/right half); ReLU module for
    Grad-CAM's layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.mean(dim=2)
        return self.pool(self.layer(x[:, :1])).flatten(1) * 4.0


def test_localisation_on_a_model_that_looks_where_it_should() -> None:
    model = _Spotlight()
    frames = np.zeros((2, 1, 8, 8, 3), dtype=np.uint8)
    frames[0, 0, 2:6, 0:3, 0] = 255  # bright patch in the left half -> class 0
    frames[1, 0, 1:4, 5:8, 0] = 255  # right half -> class 1
    labels = np.array([[1, 0], [0, 1]], dtype=np.float32)
    regions = [np.array([[0, 0, 2, 3, 6]], np.float32), np.array([[1, 5, 1, 8, 4]], np.float32)]
    spec = InputSpec(frames=1, sample_fps=1.0, size=(8, 8), multi_label=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    result = localisation(model, frames, labels, regions, spec, layer=model.layer)
    np.testing.assert_array_equal(result.predicted, [0, 1])
    assert result.summary()["pointing_game"] == 1.0
    assert result.summary()["miou"] > 0.5 and result.summary()["miou_items"] == 2


def test_average_drop_and_increase_in_confidence() -> None:
    model = _Spotlight()
    x = torch.zeros(2, 3, 4, 4)
    x[:, 0, :, :2] = 1.0  # evidence for class 0 in the left half
    targets = torch.tensor([0, 0])
    keep_left = torch.zeros(2, 4, 4)
    keep_left[:, :, :2] = 1.0
    drop, inc = average_drop_increase(model, x, keep_left, targets, multi_label=True)
    assert drop == pytest.approx(0.0, abs=1e-6) and inc == 0.0  # the map keeps all the evidence
    keep_right = 1.0 - keep_left
    drop, inc = average_drop_increase(model, x, keep_right, targets, multi_label=True)
    y, o = torch.sigmoid(torch.tensor(4.0)), torch.sigmoid(torch.tensor(0.0))  # left-half mean 1 x 4
    assert drop == pytest.approx(float((y - o) / y) * 100, rel=1e-5) and inc == 0.0
    # top 50 % of a graded map: only its left half survives, so nothing is lost
    graded = keep_left + 0.5 * torch.rand(2, 4, 4) * keep_right
    drop, _ = average_drop_increase(model, x, graded, targets, multi_label=True, keep_fraction=0.5)
    assert drop == pytest.approx(0.0, abs=1e-5)
