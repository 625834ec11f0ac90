"""Issue 9.4: ATCON (alternating, combined) and its supervised control take the same labelled steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.nets import build_model
from model.training.experiment_config import ExperimentConfig
from model.training.experiment_data import Splits
from model.training.experiment_run import run_seed
from model.training.loop import train
from model.training.schedule import epoch_plan, epoch_schedule, labelled_steps_per_epoch
from tests.model.test_training_trainer import SPEC, _small_config, toy_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("ns", "nu", "control_steps"), [(8, 700, 4), (16, 692, 8), (32, 676, 16)])
def test_labelled_share_is_counted_in_batches(ns: int, nu: int, control_steps: int) -> None:
    # the experiment's defaults (alpha 8, Bs 16, Bu 32) on the README's synthetic run, N = 2, 4, 8
    steps, p = epoch_plan("alternating", ns, nu, 16, 32, 8.0)
    supervised_steps, _ = epoch_plan("supervised", ns, nu, 16, 32, 8.0)
    assert supervised_steps == control_steps
    assert p * steps == pytest.approx(control_steps)  # items-counted p gave 2.18 / 4.68 / 10.44
    assert steps == control_steps + 22  # ceil(Nu / 32) unlabelled steps


def test_epoch_schedule_is_a_permutation_with_exact_counts() -> None:
    rng = np.random.default_rng(0)
    epochs = [epoch_schedule("alternating", 26, 4 / 26, rng) for _ in range(20)]
    assert all(kinds.count("supervised") == 4 and kinds.count("unsupervised") == 22 for kinds in epochs)
    assert len({tuple(kinds) for kinds in epochs}) > 1  # the order is random
    state = rng.bit_generator.state
    assert epoch_schedule("combined", 3, 1.0, rng) == ["combined"] * 3
    assert epoch_schedule("supervised", 2, 1.0, rng) == ["supervised"] * 2
    assert rng.bit_generator.state == state  # other modes draw nothing: cached baselines stay valid


def test_alternating_and_its_control_take_the_same_labelled_steps() -> None:
    data = toy_images(40)
    lab, unl = data.subset(np.arange(4)), data.subset(np.arange(4, 40), unlabel=True)
    atcon = _small_config(epochs=2, steps_per_epoch=None, batch_size=4, unlabelled_batch_size=8, alpha=2.0)
    per_epoch = labelled_steps_per_epoch(atcon, len(lab), len(unl))
    assert per_epoch == 2  # ceil(2 * 4 / 4); the items-counted p expected 8 / 44 * 7 = 1.27
    control = _small_config(mode="supervised", epochs=2, steps_per_epoch=per_epoch, batch_size=4)
    runs = [
        train(build_model("tiny2d", num_classes=2), labelled=lab, unlabelled=u, validation=None, spec=SPEC, config=c)
        for c, u in ((atcon, unl), (control, None))
    ]
    assert runs[0].labelled_steps == runs[1].labelled_steps == 2 * per_epoch
    assert runs[0].unlabelled_steps == 2 * 5 and runs[1].unlabelled_steps == 0


def _splits() -> Splits:
    data = toy_images(48, seed=1)
    train_pool, val, test = data.subset(np.arange(32)), data.subset(np.arange(32, 40)), data.subset(np.arange(40, 48))
    return Splits(train=train_pool, val=val, test=test, spec=SPEC, description={})


@pytest.mark.parametrize("mode", ["alternating", "combined"])
def test_experiment_control_is_step_matched_to_atcon(mode: str, tmp_path: Path) -> None:
    config = ExperimentConfig(
        data="memory",
        mode=mode,
        epochs=1,
        finetune_epochs=2,
        lr=1e-3,
        finetune_lr=1e-4,
        batch_size=4,
        unlabelled_batch_size=8,
        alpha=2.0,
        control=True,
        bootstrap=20,
        cache_baselines=False,
        progress=False,
    )
    row = run_seed(config, _splits(), n=2, seed=0, work_dir=tmp_path)
    # Ns = 4, Nu = 28: alternating 2 labelled steps per epoch, combined ceil(max(2, 3.5)) = 4
    expected = 2 * (2 if mode == "alternating" else 4)
    assert row["atcon"]["labelled_steps"] == row["control"]["labelled_steps"] == expected
    assert sum(h["labelled_steps"] for h in row["control"]["history"]) == expected
