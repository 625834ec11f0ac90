"""The fine-tune job's curves stay bounded on a long run and keep evenly spread, ordered points."""

from __future__ import annotations

from model.training.loop import TrainProgress
from server.training_curves import TrainingCurves


def _step(global_step: int, loss: float) -> TrainProgress:
    return TrainProgress(0, 1, global_step, 10_000, global_step, loss, None, "step")


def test_step_losses_are_decimated_to_the_budget() -> None:
    curves = TrainingCurves(max_steps=8)
    for i in range(1, 101):
        curves.add(_step(i, 1.0 / i))
    out = curves.as_dict()
    assert 4 <= len(out["steps"]) <= 8
    stride = out["step_stride"]
    assert stride == 16  # 100 reports into 8 points: the stride doubled until they fit
    assert [s for s, _ in out["steps"]] == list(range(1, 101, stride))  # every stride-th report, from the first
    assert all(loss == 1.0 / s for s, loss in out["steps"])


def test_short_runs_keep_every_point_and_each_epoch() -> None:
    curves = TrainingCurves()
    for i in range(1, 6):
        curves.add(_step(i, float(i)))
    curves.add(TrainProgress(0, 2, 5, 5, 5, 3.0, 0.4, "epoch", 0.9))
    curves.add(TrainProgress(1, 2, 5, 5, 10, 2.0, 0.6, "epoch", None))
    out = curves.as_dict()
    assert out["steps"] == [[i, float(i)] for i in range(1, 6)] and out["step_stride"] == 1
    assert out["epochs"] == [
        {"epoch": 1, "step": 5, "loss": 3.0, "val_loss": 0.9, "val_macro_f1": 0.4},
        {"epoch": 2, "step": 10, "loss": 2.0, "val_loss": None, "val_macro_f1": 0.6},
    ]


def test_a_step_without_a_loss_is_not_a_point() -> None:
    curves = TrainingCurves()
    curves.add(TrainProgress(0, 1, 1, 1, 1, None, None, "step"))
    assert curves.as_dict()["steps"] == []
