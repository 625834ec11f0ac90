"""Issue 9.5: the seeds x videos cluster bootstrap of the paired macro-F1 difference, and its report."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from model.training.bootstrap import (
    group_resample_weights,
    paired_bootstrap_macro_f1,
    paired_cluster_bootstrap_macro_f1,
)
from model.training.experiment import ExperimentConfig
from model.training.experiment_report import markdown_table, summarise
from model.training.training_data import TrainingData


def _videos(n_videos: int, clips: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(targets, probs_a, probs_b, groups)``: 3 classes; every clip of a video is a copy of the
    video's first (same class, same predictions), A right on 60 % of the videos, B on 70 %."""
    rng = np.random.default_rng(seed)
    target_v = rng.integers(0, 3, n_videos)

    def predicted(p_right: float) -> np.ndarray:
        right = rng.random(n_videos) < p_right
        return np.eye(3)[np.where(right, target_v, (target_v + 1) % 3)] * 0.8 + 0.1

    groups = np.repeat(np.arange(n_videos), clips)
    return target_v[groups], predicted(0.6)[groups], predicted(0.7)[groups], groups


def test_weights_count_each_drawn_video_for_all_its_clips() -> None:
    w = group_resample_weights(np.array([7, 7, 3, 3, 3]), 200, np.random.default_rng(0))
    assert w.shape == (200, 5)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 2] == w[:, 4])  # a video's clips move together
    assert np.all(w[:, 0] + w[:, 2] == 2)  # two videos drawn per resample
    assert {tuple(r) for r in w[:, [0, 2]]} == {(2, 0), (1, 1), (0, 2)}


def test_hand_checkable_two_videos() -> None:
    # video 0: two clips of class 0, video 1: two clips of class 1; A always says 0, B is right.
    targets = np.array([0, 0, 1, 1])
    a = np.tile([0.9, 0.1], (4, 1))
    b = np.eye(2)[targets] * 0.8 + 0.1
    res = paired_cluster_bootstrap_macro_f1(a, b, targets, np.array([0, 0, 1, 1]), multi_label=False, runs=4000)
    # resamples {0,0}: diff 0 (p 1/4); {0,1}: 1 - 1/3 = 2/3 (p 1/2); {1,1}: 1 - 0 = 1 (p 1/4)
    assert res["diff"] == pytest.approx(2 / 3)
    assert res["p_le_zero"] == pytest.approx(0.25, abs=0.03)
    assert (res["low"], res["high"]) == (0.0, 1.0)
    assert res["groups"] == 2 and res["seeds"] == 1


def test_correlated_clips_widen_the_interval() -> None:
    targets, a, b, groups = _videos(12, 25, seed=3)
    items = paired_bootstrap_macro_f1(a, b, targets, multi_label=False, runs=1000)
    videos = paired_cluster_bootstrap_macro_f1(a, b, targets, groups, multi_label=False, runs=1000)
    assert videos["diff"] == pytest.approx(items["diff"])
    # 300 clips are 12 pieces of evidence: about sqrt(25) = 5 times wider
    assert videos["high"] - videos["low"] > 3 * (items["high"] - items["low"])


def test_one_item_per_group_is_the_item_bootstrap() -> None:
    targets, a, b, _ = _videos(150, 1, seed=4)
    _, a2, b2, _ = _videos(150, 1, seed=5)
    item = paired_bootstrap_macro_f1([a, a2], [b, b2], targets, multi_label=False, runs=500, seed=9)
    for groups in (None, np.arange(150)):  # the same generator draws the same resamples
        same = paired_cluster_bootstrap_macro_f1([a, a2], [b, b2], targets, groups, multi_label=False, runs=500, seed=9)
        assert (same["low"], same["high"], same["p_le_zero"]) == (
            item["seeds_low"],
            item["seeds_high"],
            item["seeds_p_le_zero"],
        )
        assert same["diff"] == pytest.approx(item["diff"])
    # other group ids (still one item each): the same distribution, other draws
    shuffled = np.random.default_rng(0).permutation(1000)[:150]
    other = paired_cluster_bootstrap_macro_f1([a, a2], [b, b2], targets, shuffled, multi_label=False, runs=4000)
    assert other["low"] == pytest.approx(item["seeds_low"], abs=0.03)
    assert other["high"] == pytest.approx(item["seeds_high"], abs=0.03)


def test_summary_and_table_lead_with_the_video_interval() -> None:
    targets, a, b, groups = _videos(10, 20, seed=7)
    frames = np.zeros((targets.size, 1, 2, 2, 3), dtype=np.uint8)
    test = TrainingData(
        frames=frames, labels=np.eye(3)[targets], class_names=["x", "y", "z"], multi_label=False, groups=groups
    )
    rows = [
        {
            "seed": s,
            "baseline": {"macro_f1": 0.5, "map": 0.5},
            "atcon": {"macro_f1": 0.6, "map": 0.6, "best_epoch": 1},
            "paired_f1": {"diff": 0.1},
            "_arrays": {"baseline": {"probs": a}, "atcon": {"probs": b}},
        }
        for s in range(2)
    ]
    summary = summarise(rows, test, bootstrap=300)
    p = summary["paired_f1"]
    assert p["clusters"] == 10 and p["cluster_high"] - p["cluster_low"] > p["high"] - p["low"]
    results = {
        "config": asdict(ExperimentConfig(data="x")),
        "runs": [{"images_per_class": 2, "seeds": rows, "summary": summary}],
    }
    table = markdown_table(results)
    head, first = table.splitlines()[0], table.splitlines()[2]
    assert head.split(" | ")[4] == "Δ F1 [CI seeds × videos]"
    cell = first.split(" | ")[4]
    assert cell == f"{100 * p['diff']:+.1f} [{100 * p['cluster_low']:+.1f}, {100 * p['cluster_high']:+.1f}]"
