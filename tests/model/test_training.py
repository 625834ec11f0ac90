"""Training pieces: metrics, synthetic labelling, a tiny training run, the shipped demo model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from model.events import DetectedEvent
from model.nets import build_model
from model.training.data import ClipDataset
from model.training.detection_eval import match_events
from model.training.metrics import bootstrap_macro_f1, macro_f1, per_class_f1
from model.training.supervised import TrainConfig, build_criterion, evaluate, train_one_epoch, train_supervised
from model.training.synthetic_data import clip_boxes, clip_labels
from model.weights import InputSpec

# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_multi_label_f1_by_hand() -> None:
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.1]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    # class 0: pred [1,1,0,0] vs [1,0,1,0] -> TP1 FP1 FN1 -> 1/(1+1) = 0.5
    # class 1: pred [0,1,1,0] vs [0,1,1,0] -> 1.0
    np.testing.assert_allclose(per_class_f1(probs, targets), [0.5, 1.0])
    assert macro_f1(probs, targets) == pytest.approx(0.75)
    # exactly 0.5 is not positive ("sigmoid > 0.5")
    assert macro_f1(np.array([[0.5]]), np.array([[1]])) == 0.0


def test_single_label_f1_uses_argmax_and_skips_absent_classes() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    targets = np.array([0, 1, 1, 1])
    f1 = per_class_f1(probs, targets, multi_label=False)
    # class 0: TP1 FP1 FN0 -> 1/1.5; class 1: TP2 FP0 FN1 -> 2/2.5; class 2: never present nor predicted
    np.testing.assert_allclose(f1[:2], [2 / 3, 0.8])
    assert np.isnan(f1[2])
    assert macro_f1(probs, targets, multi_label=False) == pytest.approx((2 / 3 + 0.8) / 2)


def test_bootstrap_interval_brackets_the_value() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(200, 3))
    probs = np.clip(targets * 0.4 + rng.random((200, 3)) * 0.6, 0, 1)  # some errors either way
    value, low, high = bootstrap_macro_f1(probs, targets, runs=200)
    assert value == pytest.approx(macro_f1(probs, targets))
    assert low <= value <= high and high - low < 0.3 and low < high


# --------------------------------------------------------------------------------------------
# synthetic labelling and event matching (fake events; no video needed)
# --------------------------------------------------------------------------------------------


@dataclass
class _Ev:
    label: str
    start: float
    end: float
    boxes: list = field(default_factory=list)


NAMES = ["bed_exit", "fall", "rhythmic_movement"]


def test_clip_labels_half_overlap_rule() -> None:
    events = [_Ev("bed_exit", 1.25, 6.0), _Ev("fall", 4.5, 5.5), _Ev("passer_by", 0.0, 10.0)]
    np.testing.assert_array_equal(clip_labels(0.0, 2.0, events, NAMES), [0, 0, 0])  # 0.75 s of 2 s
    np.testing.assert_array_equal(clip_labels(1.0, 3.0, events, NAMES), [1, 0, 0])  # 1.75 s of 2 s
    np.testing.assert_array_equal(clip_labels(4.0, 6.0, events, NAMES), [1, 1, 0])  # the whole short fall
    np.testing.assert_array_equal(clip_labels(5.0, 7.0, events, NAMES), [1, 1, 0])  # half of the fall
    np.testing.assert_array_equal(clip_labels(5.25, 7.25, events, NAMES), [0, 0, 0])  # a quarter of it


def test_clip_boxes_union_in_input_pixels() -> None:
    ev = _Ev("fall", 0.0, 4.0, boxes=[(0, 0.5, 10, 20, 30, 40), (1, 1.5, 20, 10, 50, 30), (2, 3.5, 0, 0, 5, 5)])
    labels = np.array([0, 1, 0], dtype=np.float32)
    boxes = clip_boxes(0.0, 2.0, labels, [ev], NAMES, scale=(0.5, 0.25))
    np.testing.assert_allclose(boxes[1], [5, 2.5, 25, 10])
    assert np.isnan(boxes[0]).all() and np.isnan(boxes[2]).all()


def test_match_events_counts_found_and_false_alarms() -> None:
    truth = [_Ev("fall", 10, 12), _Ev("fall", 40, 41), _Ev("bed_exit", 20, 30)]
    detected = [
        DetectedEvent("fall", 11, 14, 0.9, 12, [5]),
        DetectedEvent("bed_exit", 50, 52, 0.8, 51, [25]),
        DetectedEvent("rhythmic_movement", 0, 2, 0.7, 1, [0]),
    ]
    report = match_events(detected, truth, labels=NAMES)
    assert (report.events, report.found, report.false_positives) == (3, 1, 2)
    assert report.recall == pytest.approx(1 / 3)
    assert report.per_label["fall"] == {"events": 2, "found": 1, "detections": 1, "false": 0}


# --------------------------------------------------------------------------------------------
# a tiny training run
# --------------------------------------------------------------------------------------------


def _square_dataset(n: int, seed: int = 0) -> ClipDataset:
    """Clips with a bright square on the left (class 0) and/or right (class 1) of a grey room."""
    rng = np.random.default_rng(seed)
    t, h, w = 4, 24, 32
    frames = np.full((n, t, h, w, 3), 90, dtype=np.uint8)
    frames += rng.integers(0, 20, size=frames.shape, dtype=np.uint8)
    labels = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
    for i in range(n):
        y0 = int(rng.integers(2, h - 10))
        if labels[i, 0]:
            frames[i, :, y0 : y0 + 8, 2:10] = 250
        if labels[i, 1]:
            frames[i, :, y0 : y0 + 8, w - 10 : w - 2] = 250
    return ClipDataset(
        frames=frames,
        labels=labels,
        starts=np.arange(n) * 1.0,
        ends=np.arange(n) + 1.0,
        video_ids=np.zeros(n, dtype=np.int64),
        boxes=np.full((n, 2, 4), np.nan, dtype=np.float32),
        class_names=["left", "right"],
    )


SQUARE_SPEC = InputSpec(frames=4, sample_fps=4.0, size=(32, 24))


def test_one_epoch_lowers_the_loss() -> None:
    torch.manual_seed(0)
    data = _square_dataset(96)
    model = build_model("tiny3d", num_classes=2)
    config = TrainConfig(
        batch_size=8, lr=3e-3, hflip=False, shift=0.0, brightness=0.0, colour=0.0, ramp=0.0, noise=0.0, device="cpu"
    )
    device = torch.device("cpu")
    criterion = build_criterion(data, SQUARE_SPEC, config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    before = evaluate(model, criterion, data, SQUARE_SPEC, device=device).loss
    stats = train_one_epoch(
        model, criterion, optimizer, data, SQUARE_SPEC, device=device, config=config, rng=np.random.default_rng(0)
    )
    after = evaluate(model, criterion, data, SQUARE_SPEC, device=device).loss
    assert np.isfinite(stats["loss"])
    assert after < before * 0.9, (before, after)


def test_train_supervised_keeps_best_and_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train, val = _square_dataset(48, seed=1), _square_dataset(16, seed=2)
    state = tmp_path / "state.pt"
    config = TrainConfig(epochs=1, batch_size=8, device="cpu", checkpoint_path=str(state))
    first = train_supervised(build_model("tiny2d", num_classes=2), train, val, input_spec=SQUARE_SPEC, config=config)
    assert len(first.history) == 1 and first.best_epoch == 0 and first.best is not None
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 0 and {"model", "optimizer", "scheduler", "config"} <= set(saved)
    resumed = train_supervised(
        build_model("tiny2d", num_classes=2),
        train,
        val,
        input_spec=SQUARE_SPEC,
        config=TrainConfig(epochs=2, batch_size=8, device="cpu", checkpoint_path=str(state), resume=True),
    )
    assert [row["epoch"] for row in resumed.history] == [0, 1]
    assert not resumed.model.training


# --------------------------------------------------------------------------------------------
# the shipped demo checkpoint
# --------------------------------------------------------------------------------------------

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "model" / "assets" / "demo_tiny3d.pt"
DEMO_TEST_SEED = 1001  # not a training (0-19) or validation (500) seed


def test_shipped_demo_checkpoint_finds_every_kind_of_event(tmp_path: Path) -> None:
    from model.training.detection_eval import evaluate_on_synthetic_video
    from model.weights import load_checkpoint

    loaded = load_checkpoint(DEMO_CHECKPOINT, device="cpu")
    assert loaded.arch == "tiny3d"
    assert loaded.class_names == ["bed_exit", "fall", "rhythmic_movement"]
    assert DEMO_CHECKPOINT.stat().st_size < 10_000_000
    # 60 s at the generator's default rate: one event of each label, in shuffled order.
    report, detected, result = evaluate_on_synthetic_video(loaded, tmp_path, seed=DEMO_TEST_SEED, seconds=60.0)
    assert sorted(e.label for e in result.events) == sorted(loaded.class_names)
    for label in loaded.class_names:
        assert report.per_label[label]["found"] >= 1, (label, report.as_dict(), detected)
