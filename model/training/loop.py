"""The one training loop, in the style of the torchvision reference scripts.

``train_one_epoch`` runs one epoch's steps (each ``supervised``, ``unsupervised`` or ``combined``,
:mod:`model.training.steps`) in the order :mod:`model.training.schedule` draws; ``evaluate``
scores a labelled set under ``torch.inference_mode()``; ``train`` runs the epochs, keeps the best
weights by validation macro-F1 (ties: lower validation loss) and writes a resumable state after
every epoch (:mod:`model.training.checkpoints`). The demo recipe, the server's fine-tune jobs and
the ATCON experiment (baselines, controls, ATCON runs) all train through ``train``.

Reproducible: every epoch draws its step kinds, batches, augmentation and dropout from generators
seeded by ``(config.seed, epoch)``, so a run resumed after epoch ``e`` continues exactly as the
uninterrupted run would. Progress goes to ``logging``, tqdm bars, TensorBoard scalars and an
``on_progress`` callback; ``should_cancel`` is polled before every step (a cancelled run raises
:class:`TrainingCancelled` and leaves only complete files behind).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from model.device import resolve_device
from model.training.atcon import ATCONLoss, reflect_padding
from model.training.checkpoints import TrainingState, load_training_state, save_training_state
from model.training.config import TrainConfig
from model.training.loader import batch_loader
from model.training.schedule import plan_epoch
from model.training.steps import StepContext, class_pos_weight, run_step
from model.training.training_data import TrainingData
from model.training.validation import EvalResult, evaluate
from model.weights import InputSpec

__all__ = ["TrainProgress", "TrainResult", "TrainingCancelled", "show_progress", "train", "train_one_epoch"]

logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised when ``should_cancel()`` returned True; no partial model file is written."""


@dataclass
class TrainProgress:
    """What ``on_progress`` receives: position, running loss and the last validation macro-F1."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    loss: float | None
    val_macro_f1: float | None
    phase: str  # "step" or "epoch"
    val_loss: float | None = None  # the epoch's validation loss ("epoch" reports with a validation set only)


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``model`` holds the best weights, in eval mode.

    ``best_epoch`` is -1 when the starting weights were best. ``history``: one row per epoch
    (losses, agreement, gradient norms, validation scores, step counts). ``labelled_steps`` /
    ``unlabelled_steps``: steps that used a labelled / an unlabelled batch (a combined step counts
    in both), the numbers a step-matched control is compared on.
    """

    model: nn.Module
    best_epoch: int
    best_val_macro_f1: float | None
    initial_val_macro_f1: float | None
    best: EvalResult | None
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    labelled_steps: int = 0
    unlabelled_steps: int = 0


def show_progress(progress: bool | None) -> bool:
    """Whether to draw tqdm bars: as asked, or by default only when stderr is a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def train_one_epoch(
    ctx: StepContext,
    epoch: int,
    labelled: TrainingData | None,
    unlabelled: TrainingData | None,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One epoch of ``ctx.config.mode``; returns its history row (means of losses, step counts)."""
    cfg = ctx.config
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, epoch]).generate_state(1)[0]))
    plan = plan_epoch(cfg, len(labelled) if labelled else 0, len(unlabelled) if unlabelled else 0, rng)
    lab_iter = iter(batch_loader(labelled, plan.labelled, num_workers=cfg.num_workers)) if plan.labelled else None
    unl_iter = iter(batch_loader(unlabelled, plan.unlabelled, num_workers=cfg.num_workers)) if plan.unlabelled else None
    ctx.model.train()
    ctx.stats = {}
    losses: list[float] = []
    bar = tqdm(
        plan.kinds,
        desc=f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        disable=not show_progress(cfg.progress),
    )
    for step, kind in enumerate(bar):
        if should_cancel is not None and should_cancel():
            logger.info("training cancelled at epoch %d step %d", epoch, step)
            raise TrainingCancelled(f"cancelled at epoch {epoch} step {step}")
        lab = next(lab_iter) if kind in ("supervised", "combined") and lab_iter else None
        unl = next(unl_iter) if kind in ("unsupervised", "combined") and unl_iter else None
        losses.append(run_step(ctx, kind, lab, unl, rng))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if on_step is not None:
            on_step(step, len(plan.kinds), losses[-1])
    row: dict[str, Any] = {"epoch": epoch, "steps": len(plan.kinds), "loss": float(np.mean(losses)) if losses else None}
    row.update({k: float(np.mean(v)) for k, v in ctx.stats.items()})
    row["labelled_steps"] = sum(k in ("supervised", "combined") for k in plan.kinds)
    row["unlabelled_steps"] = sum(k in ("unsupervised", "combined") for k in plan.kinds)
    return row


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


class _Run:
    """The mutable state of one :func:`train` call: optimiser, scheduler, best weights, history."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        spec: InputSpec,
        labelled: TrainingData | None,
        layer: nn.Module | None,
    ) -> None:
        self.config, self.spec = config, spec
        self.device = resolve_device(config.device)
        if config.reflect_padding:
            reflect_padding(model)
        model.to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, config.epochs), eta_min=config.lr * config.final_lr_fraction
            )
            if config.lr_schedule == "cosine"
            else None
        )
        atcon = ATCONLoss(model, layer, config.atcon) if config.mode != "supervised" else None
        pos_weight = class_pos_weight(labelled, config, self.device)
        self.ctx = StepContext(model, optimizer, atcon, spec, config, self.device, pos_weight)
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_key: tuple[float, float] | None = None
        self.best_epoch = -1
        self.best: EvalResult | None = None
        self.initial_f1: float | None = None
        self.last_val: float | None = None
        self.first_epoch, self.global_step = 0, 0

    @property
    def model(self) -> nn.Module:
        return self.ctx.model

    def validate(self, validation: TrainingData) -> EvalResult:
        cfg = self.config
        return evaluate(
            self.model,
            validation,
            self.spec,
            device=self.device,
            batch_size=cfg.eval_batch_size,
            pos_weight=self.ctx.pos_weight,
            num_workers=cfg.num_workers,
        )

    def offer(self, epoch: int, result: EvalResult | None) -> None:
        """Keep the weights if they are the best so far (no validation: the latest are)."""
        key = (result.macro_f1, -result.loss) if result is not None else (float(epoch), 0.0)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch, self.best = key, epoch, result
            self.best_state = _cpu_state(self.model) if result is not None else None

    def state(self, epoch: int) -> TrainingState:
        return TrainingState(
            model=self.model.state_dict(),
            optimizer=self.ctx.optimizer.state_dict(),
            scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
            epoch=epoch,
            step=self.global_step,
            config=self.config.to_dict(),
            history=self.history,
            best_state=self.best_state,
            best_epoch=self.best_epoch,
            best_key=None if self.best_key is None else list(self.best_key),
            initial_val_macro_f1=self.initial_f1,
        )

    def restore(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.model)
        self.ctx.optimizer.load_state_dict(state.optimizer)
        if self.scheduler is not None and state.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        self.first_epoch, self.global_step = state.epoch + 1, state.step
        self.history, self.best_state, self.best_epoch = list(state.history), state.best_state, state.best_epoch
        self.best_key = None if state.best_key is None else (float(state.best_key[0]), float(state.best_key[1]))
        self.initial_f1 = state.initial_val_macro_f1


def train(
    model: nn.Module,
    *,
    labelled: TrainingData | None,
    unlabelled: TrainingData | None,
    validation: TrainingData | None,
    spec: InputSpec,
    config: TrainConfig,
    layer: nn.Module | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``config.mode`` and return it with its best weights.

    Args:
        model: any :mod:`model.nets` classifier (already initialised; the caller seeds its init).
        labelled: items with labels (``Ns``); needed by every mode but ``unsupervised``.
        unlabelled: the pool for the ATCON loss (labels ignored); needed by every mode but
            ``supervised``.
        validation: labelled items for model selection (macro-F1); None keeps the last epoch.
        spec: input normalisation and the label rule (``multi_label``).
        config: hyper-parameters.
        layer: the Grad-CAM/ATCON layer (default: :func:`model.nets.default_target_layer`).
        on_progress: called every ``config.log_every`` steps and after each epoch.
        should_cancel: polled before each step; True raises :class:`TrainingCancelled` (the last
            completed epoch's resumable state, if any, stays intact).
    """
    t_start = time.perf_counter()
    _check_data(config.mode, labelled, unlabelled)
    run = _Run(model, config, spec, labelled, layer)
    has_val = validation is not None and len(validation) > 0
    state_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if state_path is not None and config.resume and state_path.is_file():
        state = load_training_state(state_path, run.device)
        _check_same_run(state.config, config)
        run.restore(state)
        logger.info("resumed from %s at epoch %d (step %d)", state_path, run.first_epoch, run.global_step)
    elif has_val and config.select_initial:
        assert validation is not None
        start = run.validate(validation)
        run.initial_f1 = start.macro_f1
        run.offer(-1, start)
        logger.info("starting weights: val macro-F1 %.4f", start.macro_f1)
    logger.info(
        "%s training: Ns=%d Nu=%d, %d epochs, lr=%g",
        config.mode,
        len(labelled or ()),
        len(unlabelled or ()),
        config.epochs,
        config.lr,
    )
    _run_epochs(run, labelled, unlabelled, validation if has_val else None, state_path, on_progress, should_cancel)
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    if run.best is None and validation is not None and has_val and run.best_state is not None:
        run.best = run.validate(validation)  # best weights from before a resume: score them again
    run.model.eval()
    best_f1 = run.best_key[0] if has_val and run.best_key is not None else None
    return TrainResult(
        model=run.model,
        best_epoch=run.best_epoch,
        best_val_macro_f1=best_f1,
        initial_val_macro_f1=run.initial_f1,
        best=run.best,
        history=run.history,
        steps=run.global_step,
        seconds=time.perf_counter() - t_start,
        labelled_steps=sum(int(h.get("labelled_steps", 0)) for h in run.history),
        unlabelled_steps=sum(int(h.get("unlabelled_steps", 0)) for h in run.history),
    )


# Settings a resumed run may change: where it writes, how it reports, and how long it runs.
_RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "checkpoint_path",
        "resume",
        "progress",
        "tensorboard_dir",
        "log_every",
        "device",
        "num_workers",
        "eval_batch_size",
    }
)


def _check_same_run(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to continue a state written with other hyper-parameters (a reused work folder)."""
    now = config.to_dict()
    changed = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"the training state at {config.checkpoint_path} was written with other hyper-parameters "
            f"({', '.join(changed)}); remove it or resume with the same settings"
        )


def _check_data(mode: str, labelled: TrainingData | None, unlabelled: TrainingData | None) -> None:
    if mode != "unsupervised" and not labelled:
        raise ValueError(f"mode {mode!r} needs labelled data")
    if mode != "supervised" and not unlabelled:
        raise ValueError(f"mode {mode!r} needs unlabelled data")


def _run_epochs(
    run: _Run,
    labelled: TrainingData | None,
    unlabelled: TrainingData | None,
    validation: TrainingData | None,
    state_path: Path | None,
    on_progress: Callable[[TrainProgress], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> None:
    cfg = run.config
    writer = _tensorboard(cfg.tensorboard_dir)
    run.last_val = run.history[-1].get("val_macro_f1") if run.history else run.initial_f1
    try:
        for epoch in range(run.first_epoch, cfg.epochs):
            t0 = time.perf_counter()

            def on_step(step: int, steps: int, loss: float, epoch: int = epoch) -> None:
                run.global_step += 1
                if writer is not None and run.global_step % cfg.log_every == 0:
                    writer.add_scalar("train/loss", loss, run.global_step)
                if on_progress is not None and (step + 1) % cfg.log_every == 0:
                    on_progress(
                        TrainProgress(epoch, cfg.epochs, step + 1, steps, run.global_step, loss, run.last_val, "step")
                    )

            row = train_one_epoch(run.ctx, epoch, labelled, unlabelled, on_step=on_step, should_cancel=should_cancel)
            row["lr"] = run.ctx.optimizer.param_groups[0]["lr"]
            if run.scheduler is not None:
                run.scheduler.step()
            result = run.validate(validation) if validation is not None else None
            if result is not None:
                row.update(val_loss=result.loss, val_macro_f1=result.macro_f1, val_per_class_f1=result.per_class_f1)
                run.last_val = result.macro_f1
            run.offer(epoch, result)
            row["seconds"] = time.perf_counter() - t0
            run.history.append(row)
            _log_epoch(cfg, row, writer)
            if state_path is not None:
                save_training_state(state_path, run.state(epoch))
            if on_progress is not None:
                on_progress(
                    TrainProgress(
                        epoch,
                        cfg.epochs,
                        row["steps"],
                        row["steps"],
                        run.global_step,
                        row.get("loss"),
                        run.last_val,
                        "epoch",
                        row.get("val_loss"),
                    )
                )
    finally:
        if writer is not None:
            writer.close()


def _tensorboard(folder: str | None) -> Any:
    if not folder:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported only when asked for

    return SummaryWriter(folder)


def _log_epoch(cfg: TrainConfig, row: dict[str, Any], writer: Any) -> None:
    def fmt(key: str) -> str:
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.4f}"

    logger.info(
        "%s epoch %d/%d: loss %s sup %s atcon %s agreement %s val macro-F1 %s (%.1fs)",
        cfg.mode,
        row["epoch"] + 1,
        cfg.epochs,
        fmt("loss"),
        fmt("sup_loss"),
        fmt("atcon_loss"),
        fmt("agreement"),
        fmt("val_macro_f1"),
        row["seconds"],
    )
    if writer is not None:
        for key in ("loss", "sup_loss", "atcon_loss", "agreement", "lr"):
            if row.get(key) is not None:
                writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        if row.get("val_macro_f1") is not None:
            writer.add_scalar("val/macro_f1", row["val_macro_f1"], row["epoch"])
