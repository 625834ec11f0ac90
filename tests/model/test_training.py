"""Training pieces: metrics, synthetic labelling, a tiny training run, the shipped demo model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from model.events import DetectedEvent
from model.nets import build_model
from model.training.augment import AugmentConfig
from model.training.config import TrainConfig
from model.training.detection_eval import match_events
from model.training.loop import train, train_one_epoch
from model.training.metrics import bootstrap_macro_f1, macro_f1, per_class_f1
from model.training.steps import StepContext
from model.training.synthetic_data import clip_boxes, clip_labels
from model.training.training_data import TrainingData
from model.training.validation import evaluate
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


def _square_dataset(n: int, seed: int = 0) -> TrainingData:
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
    return TrainingData(
        frames=frames, labels=labels, class_names=["left", "right"], multi_label=True, groups=np.arange(n)
    )


SQUARE_SPEC = InputSpec(frames=4, sample_fps=4.0, size=(32, 24))


def test_one_epoch_lowers_the_loss() -> None:
    torch.manual_seed(0)
    data = _square_dataset(96)
    model = build_model("tiny3d", num_classes=2)
    config = TrainConfig(mode="supervised", batch_size=8, lr=3e-3, alpha=1.0, augment=False)
    device = torch.device("cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ctx = StepContext(model, optimizer, None, SQUARE_SPEC, config, device)
    before = evaluate(model, data, SQUARE_SPEC, device=device).loss
    row = train_one_epoch(ctx, 0, data, None)
    after = evaluate(model, data, SQUARE_SPEC, device=device).loss
    assert row["steps"] == row["labelled_steps"] == 12 and np.isfinite(row["loss"])  # one pass: 96 / 8
    assert after < before * 0.9, (before, after)


def test_augmentation_keeps_pixels_in_range_and_is_reproducible() -> None:
    x = torch.rand(4, 3, 5, 12, 16)
    from model.training.augment import augment_batch

    a = augment_batch(x, np.random.default_rng(3), AugmentConfig())
    b = augment_batch(x, np.random.default_rng(3), AugmentConfig())
    assert torch.equal(a, b) and a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, x)
    off = AugmentConfig(hflip=False, shift=0, brightness=0, colour=0, ramp=0, noise=0)
    assert torch.equal(augment_batch(x, np.random.default_rng(3), off), x)


def test_supervised_training_keeps_best_and_resumes(tmp_path: Path) -> None:
    from model.training.loop import TrainingCancelled

    train_set, val = _square_dataset(48, seed=1), _square_dataset(16, seed=2)
    state = tmp_path / "state.pt"
    config = TrainConfig(
        mode="supervised",
        epochs=2,
        batch_size=8,
        alpha=1.0,
        lr=3e-3,
        lr_schedule="cosine",
        select_initial=False,
        checkpoint_path=str(state),
    )
    polls = iter(range(100))
    torch.manual_seed(0)
    with pytest.raises(TrainingCancelled):  # stopped during epoch 1: epoch 0 (6 steps) is saved
        train(
            build_model("tiny2d", num_classes=2),
            labelled=train_set,
            unlabelled=None,
            validation=val,
            spec=SQUARE_SPEC,
            config=config,
            should_cancel=lambda: next(polls) >= 8,
        )
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 0 and {"model", "optimizer", "scheduler", "config"} <= set(saved)
    torch.manual_seed(0)
    resumed = train(
        build_model("tiny2d", num_classes=2),
        labelled=train_set,
        unlabelled=None,
        validation=val,
        spec=SQUARE_SPEC,
        config=config.with_overrides(resume=True),
    )
    assert [row["epoch"] for row in resumed.history] == [0, 1] and resumed.best is not None
    assert not resumed.model.training
    torch.manual_seed(0)
    straight = train(
        build_model("tiny2d", num_classes=2),
        labelled=train_set,
        unlabelled=None,
        validation=val,
        spec=SQUARE_SPEC,
        config=config.with_overrides(checkpoint_path=None),
    )
    # a resumed run continues exactly as the uninterrupted one (per-epoch seeded randomness)
    assert resumed.best_epoch == straight.best_epoch
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)


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


def test_demo_recipe_trains_through_the_loop_and_saves_a_checkpoint(tmp_path: Path) -> None:
    from model.training.demo_recipe import train_demo_model
    from model.weights import load_checkpoint

    spec = InputSpec(frames=4, sample_fps=2.0, size=(32, 24))
    summary = train_demo_model(
        tmp_path / "demo.pt", videos=1, seconds=8.0, epochs=2, device="cpu", input_spec=spec, work_dir=tmp_path / "w"
    )
    loaded = load_checkpoint(tmp_path / "demo.pt", device="cpu")
    assert loaded.input_spec == spec and loaded.class_names == ["bed_exit", "fall", "rhythmic_movement"]
    assert [row["epoch"] for row in summary["history"]] == [0, 1]
    assert summary["history"][0]["lr"] > summary["history"][1]["lr"]  # the recipe's cosine schedule
    assert "val_macro_f1" in summary["metrics"] and summary["sha256"] == loaded.sha256
