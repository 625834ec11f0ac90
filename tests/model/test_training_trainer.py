"""The training loop in its ATCON modes: schedules, labelled subsets, BatchNorm, reproducibility, resume, callbacks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model.nets import build_model
from model.training.config import TrainConfig
from model.training.loop import TrainingCancelled, TrainProgress, train
from model.training.schedule import epoch_plan, select_labelled
from model.training.steps import supervised_loss
from model.training.training_data import TrainingData
from model.weights import InputSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_images(n: int, *, seed: int = 0, size: int = 16) -> TrainingData:
    """Two classes: a bright square in the left or the right half of a noisy image."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, 1, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, 2), dtype=np.float32)
    for i in range(n):
        k = i % 2
        x0 = int(rng.integers(0, size // 2 - 4)) + k * size // 2
        y0 = int(rng.integers(0, size - 4))
        frames[i, 0, y0 : y0 + 4, x0 : x0 + 4] = 230
        labels[i, k] = 1.0
    return TrainingData(
        frames=frames, labels=labels, class_names=["left", "right"], multi_label=False, groups=np.arange(n)
    )


SPEC = InputSpec(frames=1, sample_fps=1.0, size=(16, 16), multi_label=False)


def _small_config(**changes: object) -> TrainConfig:
    base = dict(
        mode="alternating",
        epochs=2,
        lr=1e-3,
        batch_size=4,
        unlabelled_batch_size=4,
        alpha=2.0,
        steps_per_epoch=4,
        seed=3,
        eval_batch_size=32,
        progress=False,
    )
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fresh(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny2d", num_classes=2)


# --------------------------------------------------------------------------------------------
# schedule arithmetic and labelled subsets
# --------------------------------------------------------------------------------------------


def test_epoch_plan_matches_the_formulas() -> None:
    # alternating: ceil(alpha Ns / Bs) labelled + ceil(Nu / Bu) unlabelled steps, p counted in batches
    steps, p = epoch_plan("alternating", ns=20, nu=180, bs=4, bu=10, alpha=8.0)
    assert p == pytest.approx(40 / 58)
    assert steps == 40 + 18
    assert epoch_plan("supervised", 20, 180, 4, 10, 8.0) == (40, 1.0)
    assert epoch_plan("unsupervised", 20, 180, 4, 10, 8.0) == (18, 0.0)
    assert epoch_plan("combined", 20, 180, 4, 10, 8.0) == (40, 1.0)
    assert epoch_plan("alternating", 3, 5, 4, 4, 1.0)[0] == math.ceil(3 / 4) + math.ceil(5 / 4)


def test_alternating_epoch_has_exactly_its_labelled_steps() -> None:
    data = toy_images(24)
    labelled, unlabelled = data.subset(np.arange(4)), data.subset(np.arange(4, 24), unlabel=True)
    config = _small_config(epochs=1, steps_per_epoch=None, alpha=5.0, batch_size=1, unlabelled_batch_size=1, lr=1e-4)
    steps, p = epoch_plan("alternating", 4, 20, 1, 1, 5.0)
    assert (steps, p) == (40, 0.5)
    result = train(_fresh(), labelled=labelled, unlabelled=unlabelled, validation=None, spec=SPEC, config=config)
    row = result.history[0]
    assert row["labelled_steps"] == result.labelled_steps == 20
    assert row["unlabelled_steps"] == result.unlabelled_steps == 20 == result.steps - 20


def test_select_labelled_respects_the_budget() -> None:
    rng = np.random.default_rng(0)
    multi = (rng.random((200, 4)) < 0.2).astype(np.float32)
    idx = select_labelled(multi, 3, np.random.default_rng(1), multi_label=True)
    counts = multi[idx].sum(axis=0)
    assert counts.max() <= 3 and counts.min() == 3  # no class exceeds N, and all reach it here
    assert (multi[idx].sum(axis=1) == 0).sum() == 3  # negatives have their own budget of N
    single = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 100)]
    idx = select_labelled(single, 2, np.random.default_rng(1), multi_label=False, fully_balanced=True)
    np.testing.assert_array_equal(single[idx].sum(axis=0), [2, 2, 2, 2, 2])
    other = select_labelled(single, 2, np.random.default_rng(2), multi_label=False)
    assert not np.array_equal(idx, other)  # the seed chooses the subset
    with pytest.raises(ValueError, match="only"):
        select_labelled(single[:6], 3, np.random.default_rng(0), multi_label=False, fully_balanced=True)


def test_supervised_loss_ignores_unknown_labels() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, 0.5, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert supervised_loss(logits, labels, multi_label=True).item() == pytest.approx(expected.item())
    ce = supervised_loss(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), multi_label=False)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item())


# --------------------------------------------------------------------------------------------
# BatchNorm, reproducibility, resume, callbacks
# --------------------------------------------------------------------------------------------


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_batchnorm_statistics_frozen_in_unsupervised_steps_only() -> None:
    data = toy_images(16)
    unl = data.subset(np.arange(16), unlabel=True)
    model = _fresh()
    before = _bn_stats(model)
    start = _weights(model)
    train(model, labelled=None, unlabelled=unl, validation=None, spec=SPEC, config=_small_config(mode="unsupervised"))
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    after = _weights(model)
    assert any(not torch.equal(start[k], after[k]) for k in start if k.endswith("conv.weight"))  # it did train
    model = _fresh()
    train(model, labelled=data, unlabelled=None, validation=None, spec=SPEC, config=_small_config(mode="supervised"))
    assert all(not torch.equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    # the fine-tuning stabiliser: statistics frozen in supervised steps too, affine weights trained
    model = _fresh()
    bn_weight = model.blocks[0].bn.weight.detach().clone()
    config = _small_config(mode="alternating", freeze_batchnorm=True)
    train(model, labelled=data, unlabelled=data, validation=None, spec=SPEC, config=config)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(model), strict=True))
    assert not torch.equal(bn_weight, model.blocks[0].bn.weight)
    assert model.blocks[0].bn.training is False  # returned in eval mode, as every result


@pytest.mark.parametrize("mode", ["alternating", "combined"])
def test_same_seed_same_weights(mode: str) -> None:
    data = toy_images(24)
    lab, unl = data.subset(np.arange(6)), data.subset(np.arange(6, 24), unlabel=True)
    config = _small_config(mode=mode, atcon_weight=0.5)
    runs = []
    for _ in range(2):  # no validation: the last weights are returned, not a selected epoch
        result = train(_fresh(), labelled=lab, unlabelled=unl, validation=None, spec=SPEC, config=config)
        runs.append(_weights(result.model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = train(
        _fresh(), labelled=lab, unlabelled=unl, validation=None, spec=SPEC, config=_small_config(mode=mode, seed=4)
    )
    assert any(not torch.equal(runs[0][k], v) for k, v in _weights(other.model).items())


def test_cancel_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    data = toy_images(24)
    lab, unl = data.subset(np.arange(6)), data.subset(np.arange(6, 24), unlabel=True)
    config = _small_config(epochs=3, select_initial=False)
    full = train(_fresh(), labelled=lab, unlabelled=unl, validation=None, spec=SPEC, config=config)

    state = tmp_path / "state" / "train.pt"
    calls = {"n": 0}

    def cancel_in_second_epoch() -> bool:
        calls["n"] += 1
        return calls["n"] == 6  # step 2 of epoch 2 (4 steps per epoch)

    with pytest.raises(TrainingCancelled):
        train(
            _fresh(),
            labelled=lab,
            unlabelled=unl,
            validation=None,
            spec=SPEC,
            config=_small_config(epochs=3, select_initial=False, checkpoint_path=str(state)),
            should_cancel=cancel_in_second_epoch,
        )
    assert sorted(p.name for p in state.parent.iterdir()) == ["train.pt"]  # complete file, no temp left
    saved = torch.load(state, weights_only=True)
    assert (
        saved["epoch"] == 0
        and saved["step"] == 4
        and set(saved) >= {"model", "optimizer", "scheduler", "epoch", "config"}
    )
    resumed = train(
        _fresh(seed=99),  # different init: everything must come from the state
        labelled=lab,
        unlabelled=unl,
        validation=None,
        spec=SPEC,
        config=_small_config(epochs=3, select_initial=False, checkpoint_path=str(state), resume=True),
    )
    assert resumed.steps == full.steps == 12
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_by_validation_and_callbacks(tmp_path: Path) -> None:
    data = toy_images(40)
    lab, unl, val = (
        data.subset(np.arange(8)),
        data.subset(np.arange(8, 24), unlabel=True),
        data.subset(np.arange(24, 40)),
    )
    events: list[TrainProgress] = []
    config = _small_config(epochs=3, log_every=2, tensorboard_dir=str(tmp_path / "tb"))
    result = train(
        _fresh(), labelled=lab, unlabelled=unl, validation=val, spec=SPEC, config=config, on_progress=events.append
    )
    scores = [result.initial_val_macro_f1] + [row["val_macro_f1"] for row in result.history]
    assert result.best_val_macro_f1 == max(scores)
    # -1 = the starting weights; equal macro-F1 goes to the lower validation loss
    assert scores[result.best_epoch + 1] == max(scores)
    epochs = [e for e in events if e.phase == "epoch"]
    assert [e.epoch for e in epochs] == [0, 1, 2]
    assert [e.val_macro_f1 for e in epochs] == [row["val_macro_f1"] for row in result.history]
    assert [e.val_loss for e in epochs] == [row["val_loss"] for row in result.history]  # for the job's curves
    assert all(e.val_loss is None for e in events if e.phase == "step")
    assert sum(e.phase == "step" for e in events) == 3 * 2  # every 2nd of 4 steps
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert not result.model.training


def test_config_from_plain_hyperparameters() -> None:
    config = TrainConfig.from_dict({"mode": "combined", "lr": 1e-5, "atcon": {"detach_mask": True}})
    assert config.atcon.detach_mask and config.mode == "combined"
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="semi")


def test_resume_refuses_a_state_of_other_hyperparameters(tmp_path: Path) -> None:
    data = toy_images(24)
    lab, unl = data.subset(np.arange(6)), data.subset(np.arange(6, 24), unlabel=True)
    state = tmp_path / "state.pt"
    train(
        _fresh(),
        labelled=lab,
        unlabelled=unl,
        validation=None,
        spec=SPEC,
        config=_small_config(epochs=1, checkpoint_path=str(state)),
    )
    other = _small_config(epochs=2, lr=3e-4, checkpoint_path=str(state), resume=True)
    with pytest.raises(ValueError, match="other hyper-parameters.*lr"):
        train(_fresh(), labelled=lab, unlabelled=unl, validation=None, spec=SPEC, config=other)
    more = _small_config(epochs=2, checkpoint_path=str(state), resume=True)  # more epochs: a continuation
    assert len(train(_fresh(), labelled=lab, unlabelled=unl, validation=None, spec=SPEC, config=more).history) == 2


def test_single_label_loss_skips_items_without_a_positive() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [0.0, 3.0]])
    nan = float("nan")
    labels = torch.tensor([[1.0, 0.0], [0.0, nan], [0.0, 1.0]])  # row 1: rejected, nothing positive
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert supervised_loss(logits, labels, multi_label=False).item() == pytest.approx(expected.item())
    assert supervised_loss(logits[1:2], labels[1:2], multi_label=False).item() == 0.0
