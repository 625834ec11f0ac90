"""Bounded loss and validation-F1 curves of a fine-tune job, kept in ``job.result["curves"]``.

The job row used to hold only the latest progress, so nothing could draw how a run went. The trainer reports
every ``log_every`` steps and after every epoch; keeping each report would grow the row without bound on a long
run, so the step losses are decimated (a fixed budget of points: when it is full, every second point goes and
the stride doubles), and the per-epoch points (mean training loss, validation loss and macro-F1) are kept
whole up to a cap far above any real epoch count.
"""

from __future__ import annotations

from typing import Any

from model.training.loop import TrainProgress

#: at most this many step-loss points per job (a chart of ~200 points reads as a curve; the row stays small)
MAX_STEP_POINTS = 200
#: epochs beyond this are decimated like the steps (nobody fine-tunes for thousands of epochs in a ward)
MAX_EPOCH_POINTS = 1000


class _Decimated:
    """Every ``stride``-th of the values offered, at most ``limit`` of them, evenly spread over the run."""

    def __init__(self, limit: int) -> None:
        self.limit, self.stride, self.offered = limit, 1, 0
        self.points: list[Any] = []

    def offer(self, point: Any) -> None:
        if self.offered % self.stride == 0:
            self.points.append(point)
            if len(self.points) > self.limit:
                self.points = self.points[::2]  # the kept points stay those whose index is a multiple of stride
                self.stride *= 2
        self.offered += 1


class TrainingCurves:
    """What a fine-tune job's chart needs, built from the trainer's progress reports."""

    def __init__(self, *, max_steps: int = MAX_STEP_POINTS, max_epochs: int = MAX_EPOCH_POINTS) -> None:
        self._steps = _Decimated(max_steps)
        self._epochs = _Decimated(max_epochs)

    def add(self, p: TrainProgress) -> None:
        """One progress report: a step's loss, or an epoch's mean loss and validation scores."""
        if p.phase == "epoch":
            self._epochs.offer({"epoch": p.epoch + 1, "step": p.global_step, "loss": p.loss,
                                "val_loss": p.val_loss, "val_macro_f1": p.val_macro_f1})
        elif p.loss is not None:
            self._steps.offer([p.global_step, p.loss])

    def as_dict(self) -> dict[str, Any]:
        """JSON for the job row: ``epochs`` (1-based epoch, global step, loss, val_loss, val_macro_f1),
        ``steps`` ([global step, loss] pairs) and ``step_stride`` (every how many reports one was kept)."""
        return {"epochs": list(self._epochs.points), "steps": [list(s) for s in self._steps.points],
                "step_stride": self._steps.stride}
