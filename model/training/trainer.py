"""The ATCON trainer: supervised, unsupervised, alternating and combined schedules.

Schedules (ATCON.md "Training schedule"); ``Ns``/``Nu`` labelled/unlabelled items, ``Bs``/``Bu``
their batch sizes, ``alpha`` the labelled oversampling factor (not a loss weight):

* ``supervised``: BCE-with-logits (multi-label; NaN labels ignored) or cross-entropy
  (single-label), BatchNorm in train mode (unless ``freeze_batchnorm``); an epoch is
  ``ceil(alpha * Ns / Bs)`` steps, the same labelled exposure as an alternating epoch, so epochs
  of both modes are comparable;
* ``unsupervised``: the ATCON loss only, BatchNorm frozen; ``ceil(Nu / Bu)`` steps;
* ``alternating`` (the paper's main mode): an epoch is ``ceil(alpha * Ns / Bs)`` labelled and
  ``ceil(Nu / Bu)`` unlabelled steps in a random order drawn per epoch (:func:`epoch_schedule`),
  so a step is labelled with probability ``p = (alpha Ns / Bs) / (alpha Ns / Bs + Nu / Bu)``,
  counted in *batches*: ATCON.md's ``alpha Ns / (alpha Ns + Nu)`` counts items, which with
  ``Bs != Bu`` gives fewer labelled steps than the supervised control (2.2 instead of 4 per epoch
  for Ns = 8, Nu = 700, Bs = 16, Bu = 32, alpha = 8);
* ``combined``: ``L = L_sup(labelled batch) + lambda * L_atcon(unlabelled batch)`` every step;
  ``ceil(max(alpha * Ns / Bs, Nu / Bu))`` steps, each one labelled *and* unlabelled, so the labelled
  set is seen at least ``alpha`` times per epoch (more when the pool is larger): a step-matched
  control must take :func:`epoch_plan`'s labelled steps, not ``ceil(alpha Ns / Bs)``.

:class:`TrainResult` counts the steps that used a labelled and an unlabelled batch.

Adam at a constant learning rate. After every epoch the model is scored on the validation set
(macro-F1) and the best weights are kept (optionally the starting weights count as "epoch -1",
so fine-tuning never returns a model worse on validation than its starting point). Stabilisers
from ATCON.md are options: gradient clipping (``grad_clip``), a separate clip for ATCON steps,
the detached mask (``atcon.detach_mask``), small ``lambda`` in combined mode, frozen BatchNorm
statistics in supervised steps (``freeze_batchnorm``), reflect padding.

Reproducible: ``config.seed`` seeds torch and the numpy generator that draws batches, step kinds
and augmentations; a resumable state (``{model, optimizer, epoch, step, rng, config, ...}``,
written atomically after each epoch) continues a run exactly as if uninterrupted. Progress goes
to ``logging``, tqdm bars, TensorBoard scalars and an ``on_progress`` callback; ``should_cancel``
is polled before every step (a cancelled run raises :class:`TrainingCancelled` and leaves only
complete files behind).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from model.device import resolve_device
from model.files import atomic_path
from model.inference import frames_to_tensor
from model.training.atcon import ATCONConfig, ATCONLoss, frozen_batchnorm, reflect_padding
from model.training.datasets import TrainingData
from model.training.evaluation import class_targets, predict_probs
from model.training.metrics import macro_f1, per_class_f1
from model.weights import InputSpec

__all__ = [
    "MODES",
    "STATE_FORMAT",
    "FinetuneConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingCancelled",
    "augment",
    "epoch_plan",
    "epoch_schedule",
    "labelled_steps_per_epoch",
    "select_labelled",
    "show_progress",
    "supervised_loss",
    "train",
]

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("supervised", "unsupervised", "alternating", "combined")
STATE_FORMAT = "wardwatch-atcon-state/1"


class TrainingCancelled(Exception):
    """Raised when ``should_cancel()`` returned True; no partial model file is written."""


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a (fine-)tuning run: plain types only (stored in checkpoints/JSON).

    Attributes:
        mode: ``supervised`` / ``unsupervised`` / ``alternating`` / ``combined``.
        epochs: number of epochs (see the module docstring for epoch lengths).
        lr: Adam learning rate (constant). The paper used 1e-6..8e-6 on pretrained ResNet-50; at 1e-4
            ATCON fine-tuning lost 20 validation F1 points on the synthetic ward clips (README), hence 1e-5.
        weight_decay: Adam L2 weight decay.
        batch_size: labelled batch size ``Bs``.
        unlabelled_batch_size: unlabelled batch size ``Bu``.
        alpha: labelled oversampling factor: ``ceil(alpha Ns / Bs)`` labelled steps per epoch
            (supervised and alternating; see the module docstring).
        atcon_weight: ``lambda`` of the combined mode.
        grad_clip: max global gradient norm for every step (None = no clipping).
        atcon_grad_clip: max norm for unsupervised steps only (ATCON gradients can be ~20x the
            supervised ones; None = use ``grad_clip``).
        atcon: the loss options (:class:`~model.training.atcon.ATCONConfig`).
        reflect_padding: switch convolutions to reflect/replicate padding before training.
        augment: flip/shift/colour augmentation of labelled batches (as the supervised recipe).
        augment_unlabelled: the same for unlabelled batches.
        select_initial: the starting weights compete for "best" (scored before the first epoch).
        freeze_batchnorm: BatchNorm statistics frozen in supervised steps too (a fine-tuning
            stabiliser for small labelled batches; ATCON steps always freeze them).
        steps_per_epoch: override the computed epoch length.
        seed: seeds torch and the batch/step-kind generator.
        device: ``auto`` / ``cpu`` / ``cuda[:N]``.
        eval_batch_size: validation batch size.
        progress: tqdm bars (None = only when stderr is a terminal).
        log_every: steps between progress callbacks / TensorBoard points.
        tensorboard_dir: write TensorBoard scalars here (None = off).
        checkpoint_path: resumable training state, rewritten atomically after each epoch.
        resume: continue from ``checkpoint_path`` when it exists.
    """

    mode: str = "alternating"
    epochs: int = 10
    lr: float = 1e-5
    weight_decay: float = 0.0
    batch_size: int = 16
    unlabelled_batch_size: int = 16
    alpha: float = 8.0
    atcon_weight: float = 0.1
    grad_clip: float | None = 5.0
    atcon_grad_clip: float | None = None
    atcon: ATCONConfig = field(default_factory=ATCONConfig)
    reflect_padding: bool = False
    augment: bool = True
    augment_unlabelled: bool = False
    hflip: bool = True
    jitter: float = 0.1
    colour: float = 0.05
    shift: float = 0.05
    select_initial: bool = True
    freeze_batchnorm: bool = False
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 64
    progress: bool | None = None
    log_every: int = 10
    tensorboard_dir: str | None = None
    checkpoint_path: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.atcon, Mapping):
            self.atcon = ATCONConfig(**self.atcon)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.unlabelled_batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch sizes >= 1")
        if not self.lr > 0 or self.alpha <= 0 or self.atcon_weight < 0:
            raise ValueError("lr and alpha must be > 0 and atcon_weight >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (nested ATCON options as a dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """Build from plain hyper-parameters; unknown keys are refused (typos must not pass)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {sorted(unknown)}; known: {sorted(names)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("atcon"), Mapping):
            kwargs["atcon"] = ATCONConfig(**kwargs["atcon"])
        return cls(**kwargs)


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


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``model`` holds the best weights, in eval mode.

    ``best_epoch`` is -1 when the starting weights were best. ``history``: one row per epoch
    (losses, agreement, gradient norms, validation macro-F1, step counts). ``labelled_steps`` /
    ``unlabelled_steps``: steps that used a labelled / an unlabelled batch (a combined step counts
    in both), the numbers a step-matched control is compared on.
    """

    model: nn.Module
    best_epoch: int
    best_val_macro_f1: float | None
    initial_val_macro_f1: float | None
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    labelled_steps: int = 0
    unlabelled_steps: int = 0


# --------------------------------------------------------------------------------------------
# Labelled subset, epoch plan, batches
# --------------------------------------------------------------------------------------------


def select_labelled(
    labels: np.ndarray,
    images_per_class: int,
    rng: np.random.Generator,
    *,
    fully_balanced: bool = False,
    multi_label: bool = True,
) -> np.ndarray:
    """Indices of a small labelled subset with at most ``images_per_class`` positives per class.

    Greedy (ATCON.md): items in random order are taken when no class would exceed the budget
    and the item adds a positive to a class still under it. Multi-label items without any
    positive (e.g. quiet video clips) have their own budget of ``images_per_class``, so the
    subset holds some negatives. ``fully_balanced``: exactly ``images_per_class`` single-label
    items per class (items with exactly one positive); raises if a class has too few.
    """
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0) > 0.5
    n, k = y.shape
    order = rng.permutation(n)
    if fully_balanced:
        single = y.sum(axis=1) == 1
        chosen: list[int] = []
        for c in range(k):
            pool = [int(i) for i in order if single[i] and y[i, c]]
            if len(pool) < images_per_class:
                raise ValueError(f"class {c} has only {len(pool)} single-label items, {images_per_class} needed")
            chosen.extend(pool[:images_per_class])
        return np.sort(np.asarray(chosen, dtype=np.int64))
    counts = np.zeros(k + 1, dtype=np.int64)  # last slot: items without a positive
    taken: list[int] = []
    for i in order:
        pos = np.flatnonzero(y[i])
        slots = pos if pos.size else np.array([k])
        if multi_label or pos.size:
            if np.all(counts[slots] < images_per_class):
                counts[slots] += 1
                taken.append(int(i))
        if np.all(counts[: k + (1 if multi_label else 0)] >= images_per_class):
            break
    return np.sort(np.asarray(taken, dtype=np.int64))


def _labelled_batches(ns: int, bs: int, alpha: float) -> int:
    """``ceil(alpha Ns / Bs)``: the labelled steps of a supervised and of an alternating epoch."""
    return max(1, math.ceil(alpha * ns / bs))


def epoch_plan(mode: str, ns: int, nu: int, bs: int, bu: int, alpha: float) -> tuple[int, float]:
    """``(steps per epoch, share of labelled steps)`` for a schedule (module docstring).

    The alternating share is counted in batches, ``L / (L + U)`` with ``L = ceil(alpha Ns / Bs)``
    and ``U = ceil(Nu / Bu)``, so an alternating epoch has exactly the labelled steps of a
    supervised one (both use ``ceil``; ``round`` would change the supervised epoch, and with it
    every cached baseline).
    """
    if mode == "supervised":
        return _labelled_batches(ns, bs, alpha), 1.0
    if mode == "unsupervised":
        return max(1, math.ceil(nu / bu)), 0.0
    if mode == "combined":
        return max(1, math.ceil(max(alpha * ns / bs, nu / bu))), 1.0
    if mode == "alternating":
        lab = _labelled_batches(ns, bs, alpha) if ns else 0
        unl = math.ceil(nu / bu) if nu else 0
        return max(1, lab + unl), (lab / (lab + unl) if lab + unl else 0.0)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def labelled_steps_per_epoch(config: FinetuneConfig, ns: int, nu: int) -> int:
    """Steps per epoch of ``config`` that use a labelled batch (``steps_per_epoch`` honoured).

    What a step-matched supervised control sets as its ``steps_per_epoch`` (0: unsupervised).
    """
    steps, p = epoch_plan(config.mode, ns, nu, config.batch_size, config.unlabelled_batch_size, config.alpha)
    steps = int(config.steps_per_epoch) if config.steps_per_epoch else steps
    return int(round(p * steps))


def epoch_schedule(mode: str, steps: int, p_labelled: float, rng: np.random.Generator) -> list[str]:
    """The kind of every step of one epoch: ``supervised`` / ``unsupervised`` / ``combined``.

    Alternating epochs are a random permutation of exactly ``round(p * steps)`` labelled steps and
    the rest unlabelled, not a Bernoulli draw per step: a Bernoulli epoch has a binomial number of
    labelled steps (sd ~ 1.5 of 4 expected at N = 2), so ATCON and its step-matched supervised
    control would differ by chance in the very quantity the control holds fixed. Other modes draw
    nothing (their random stream, hence cached baselines, is unchanged).
    """
    if mode != "alternating":
        return [mode] * steps
    n_lab = int(round(p_labelled * steps))
    labelled = rng.permutation(steps) < n_lab
    return ["supervised" if lab else "unsupervised" for lab in labelled]


class _Cycler:
    """Endless shuffled index batches over ``range(n)`` (a new permutation per pass).

    A batch that would straddle two passes takes the rest of the old pass plus the start of a new
    one, so every batch has ``min(batch, n)`` items. The state (permutation and position) is part
    of the resumable checkpoint.
    """

    def __init__(self, n: int, batch: int, rng: np.random.Generator) -> None:
        self.n, self.batch, self.rng = n, min(batch, n), rng
        self.perm = rng.permutation(n) if n else np.zeros(0, dtype=np.int64)
        self.pos = 0

    def next(self) -> np.ndarray:
        out: list[np.ndarray] = []
        need = self.batch
        while need > 0:
            if self.pos >= self.n:
                self.perm, self.pos = self.rng.permutation(self.n), 0
            take = self.perm[self.pos : self.pos + need]
            out.append(take)
            self.pos += take.size
            need -= take.size
        return np.concatenate(out)

    def state(self) -> dict[str, Any]:
        return {"perm": [int(i) for i in self.perm], "pos": int(self.pos)}

    def load(self, state: Mapping[str, Any]) -> None:
        self.perm = np.asarray(state["perm"], dtype=np.int64)
        self.pos = int(state["pos"])


def _inputs(data: TrainingData, idx: np.ndarray, spec: InputSpec, device: torch.device) -> Tensor:
    """Normalised float ``[B, 3, T, H, W]`` on ``device`` (images are clips with T = 1)."""
    return frames_to_tensor(data.batch(idx), spec).to(device, non_blocking=True)


def augment(x: Tensor, rng: np.random.Generator, config: FinetuneConfig) -> Tensor:
    """Random flip, translation and brightness/contrast/colour change of ``[B, 3, T, H, W]``.

    Normalised units; one draw per item, the same for all its frames (no temporal flicker that
    could look like an event). Translation by up to ``shift`` of the size with replicated borders
    (one batched ``grid_sample``); ``jitter`` scales contrast by ``1 +- jitter`` and adds
    ``+- 2 * jitter`` brightness; ``colour`` adds ``+- 2 * colour`` per channel. Draws come from
    ``rng`` only, so runs are reproducible.
    """
    b, c = x.shape[:2]
    out = x
    if config.hflip:
        flip = torch.from_numpy(rng.random(b) < 0.5).to(x.device)
        out = torch.where(flip.view(b, *([1] * (x.dim() - 1))), out.flip(-1), out)
    if config.shift > 0:
        h, w = out.shape[-2:]
        theta = torch.zeros(b, 2, 3, dtype=out.dtype, device=out.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        moves = rng.uniform(-2 * config.shift, 2 * config.shift, size=(b, 2)).astype(np.float32)
        theta[:, :, 2] = torch.from_numpy(moves).to(out.device)  # grid units: 2 = the whole size
        flat = out.reshape(b, -1, h, w)
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False).view_as(out)
    shape = (b,) + (1,) * (x.dim() - 1)
    if config.jitter > 0:
        contrast = rng.uniform(1 - config.jitter, 1 + config.jitter, size=b).astype(np.float32)
        bright = rng.uniform(-config.jitter, config.jitter, size=b).astype(np.float32) * 2.0
        out = out * torch.from_numpy(contrast).view(shape).to(out.device) + torch.from_numpy(bright).view(shape).to(
            out.device
        )
    if config.colour > 0:
        tint = rng.uniform(-config.colour, config.colour, size=(b, c)).astype(np.float32) * 2.0
        out = out + torch.from_numpy(tint).view(b, c, *([1] * (x.dim() - 2))).to(out.device)
    return out


def supervised_loss(logits: Tensor, labels: Tensor, *, multi_label: bool) -> Tensor:
    """BCE-with-logits over known entries (NaN labels ignored) or cross-entropy of the argmax.

    ``logits`` ``[B, K]``, ``labels`` float ``[B, K]`` (1 / 0 / NaN).
    """
    if not multi_label:
        return F.cross_entropy(logits, torch.nan_to_num(labels, nan=0.0).argmax(dim=1))
    known = ~torch.isnan(labels)
    target = torch.where(known, labels, torch.zeros_like(labels))
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
    return per.sum() / known.sum().clamp_min(1)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def show_progress(progress: bool | None) -> bool:
    """Whether to draw tqdm bars: as asked, or by default only when stderr is a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save``: a cancelled or killed run never leaves a torn state behind."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _validate(model: nn.Module, val: TrainingData, spec: InputSpec, config: FinetuneConfig) -> tuple[float, list]:
    probs = predict_probs(model, val.frames, spec, batch_size=config.eval_batch_size)
    targets = class_targets(val.labels, multi_label=val.multi_label)
    f1 = macro_f1(probs, targets, multi_label=val.multi_label)
    per = per_class_f1(probs, targets, multi_label=val.multi_label)
    return f1, [None if math.isnan(v) else float(v) for v in per]


def _step_clip(model: nn.Module, limit: float | None) -> float:
    """Clip gradients to ``limit`` (global L2 norm) and return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = nn.utils.clip_grad_norm_(params, limit if limit else float("inf"))
    return float(norm)


class _Stats:
    """Running sums for one epoch's history row."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def count(self, key: str) -> None:
        self.totals[key] = self.totals.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        out: dict[str, float] = {k: self.sums[k] / self.counts[k] for k in self.sums}
        out.update(self.totals)
        return out


def train(
    model: nn.Module,
    *,
    labelled: TrainingData | None,
    unlabelled: TrainingData | None,
    validation: TrainingData | None,
    spec: InputSpec,
    config: FinetuneConfig,
    layer: nn.Module | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``config.mode`` and return it with its best weights.

    Args:
        model: any :mod:`model.nets` classifier (already initialised; the caller seeds its init).
        labelled: items with labels (``Ns`` items); needed by every mode but ``unsupervised``.
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
    mode = config.mode
    device = resolve_device(config.device)
    ns = len(labelled) if labelled is not None else 0
    nu = len(unlabelled) if unlabelled is not None else 0
    if mode != "unsupervised" and ns == 0:
        raise ValueError(f"mode {mode!r} needs labelled data")
    if mode != "supervised" and nu == 0:
        raise ValueError(f"mode {mode!r} needs unlabelled data")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.reflect_padding:
        reflect_padding(model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    atcon = ATCONLoss(model, layer, config.atcon) if mode != "supervised" else None
    steps, p_labelled = epoch_plan(mode, ns, nu, config.batch_size, config.unlabelled_batch_size, config.alpha)
    if config.steps_per_epoch:
        steps = int(config.steps_per_epoch)
    lab_cycle = _Cycler(ns, config.batch_size, rng)
    unl_cycle = _Cycler(nu, config.unlabelled_batch_size, rng)
    logger.info(
        "%s training: Ns=%d Nu=%d, %d steps/epoch, p(labelled)=%.3f, %d epochs, lr=%g",
        mode,
        ns,
        nu,
        steps,
        p_labelled,
        config.epochs,
        config.lr,
    )

    history: list[dict[str, Any]] = []
    best_state: dict[str, Tensor] | None = None
    best_f1: float | None = None
    best_epoch = -1
    initial_f1: float | None = None
    first_epoch, global_step = 0, 0
    state_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    has_val = validation is not None and len(validation) > 0

    if state_path is not None and config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} is not an ATCON training state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, global_step = int(state["epoch"]) + 1, int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        rng.bit_generator.state = state["rng"]["numpy"]
        lab_cycle.load(state["rng"]["labelled"])
        unl_cycle.load(state["rng"]["unlabelled"])
        history = list(state["history"])
        best_state, best_epoch = state["best_state"], int(state["best_epoch"])
        best_f1 = state["best_f1"]
        initial_f1 = state["initial_f1"]
        logger.info("resumed from %s at epoch %d (step %d)", state_path, first_epoch, global_step)
    elif has_val and config.select_initial:
        assert validation is not None
        initial_f1, _ = _validate(model, validation, spec, config)
        best_f1, best_epoch = initial_f1, -1
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        logger.info("starting weights: val macro-F1 %.4f", initial_f1)

    writer = None
    if config.tensorboard_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(config.tensorboard_dir)
    show = show_progress(config.progress)
    last_val: float | None = history[-1].get("val_macro_f1") if history else initial_f1
    try:
        for epoch in range(first_epoch, config.epochs):
            model.train()
            stats = _Stats()
            t0 = time.perf_counter()
            bar = tqdm(range(steps), desc=f"{mode} epoch {epoch + 1}/{config.epochs}", leave=False, disable=not show)
            kinds = epoch_schedule(mode, steps, p_labelled, rng)
            for step in bar:
                if should_cancel is not None and should_cancel():
                    logger.info("training cancelled at epoch %d step %d", epoch, step)
                    raise TrainingCancelled(f"cancelled at epoch {epoch} step {step}")
                kind = kinds[step]
                loss = _one_step(
                    kind,
                    model,
                    optimizer,
                    atcon,
                    labelled,
                    unlabelled,
                    lab_cycle,
                    unl_cycle,
                    spec,
                    config,
                    rng,
                    device,
                    stats,
                )
                global_step += 1
                stats.add("loss", loss)
                stats.count(f"{kind}_steps")
                if show:
                    bar.set_postfix(loss=f"{loss:.4f}")
                if writer is not None and global_step % config.log_every == 0:
                    for key, value in stats.means().items():
                        writer.add_scalar(f"train/{key}", value, global_step)
                if on_progress is not None and (step + 1) % config.log_every == 0:
                    on_progress(
                        TrainProgress(epoch, config.epochs, step + 1, steps, global_step, loss, last_val, "step")
                    )
            row: dict[str, Any] = {"epoch": epoch, "steps": steps, **stats.means(), **_step_counts(kinds)}
            if has_val:
                assert validation is not None
                f1, per = _validate(model, validation, spec, config)
                row.update(val_macro_f1=f1, val_per_class_f1=per)
                last_val = f1
                if best_f1 is None or f1 > best_f1:
                    best_f1, best_epoch = f1, epoch
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                best_epoch, best_state = epoch, None
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            logger.info(
                "%s epoch %d/%d: loss %.4f sup %s atcon %s agreement %s val macro-F1 %s (%.1fs)",
                mode,
                epoch + 1,
                config.epochs,
                row.get("loss", float("nan")),
                _fmt(row.get("sup_loss")),
                _fmt(row.get("atcon_loss")),
                _fmt(row.get("agreement")),
                _fmt(row.get("val_macro_f1")),
                row["seconds"],
            )
            if writer is not None and has_val:
                writer.add_scalar("val/macro_f1", row["val_macro_f1"], epoch)
            if state_path is not None:
                _save_state(
                    state_path,
                    {
                        "format": STATE_FORMAT,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "step": global_step,
                        "rng": {
                            "torch": torch.get_rng_state(),
                            "numpy": rng.bit_generator.state,
                            "labelled": lab_cycle.state(),
                            "unlabelled": unl_cycle.state(),
                        },
                        "config": config.to_dict(),
                        "history": history,
                        "best_state": best_state,
                        "best_epoch": best_epoch,
                        "best_f1": best_f1,
                        "initial_f1": initial_f1,
                    },
                )
            if on_progress is not None:
                on_progress(
                    TrainProgress(epoch, config.epochs, steps, steps, global_step, row.get("loss"), last_val, "epoch")
                )
    finally:
        if writer is not None:
            writer.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_val_macro_f1=best_f1,
        initial_val_macro_f1=initial_f1,
        history=history,
        steps=global_step,
        seconds=time.perf_counter() - t_start,
        labelled_steps=sum(int(h.get("labelled_steps", 0)) for h in history),
        unlabelled_steps=sum(int(h.get("unlabelled_steps", 0)) for h in history),
    )


def _step_counts(kinds: list[str]) -> dict[str, int]:
    """Steps of an epoch that used a labelled / an unlabelled batch (combined steps use both)."""
    return {
        "labelled_steps": sum(k in ("supervised", "combined") for k in kinds),
        "unlabelled_steps": sum(k in ("unsupervised", "combined") for k in kinds),
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4f}"


def _one_step(
    kind: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    atcon: ATCONLoss | None,
    labelled: TrainingData | None,
    unlabelled: TrainingData | None,
    lab_cycle: _Cycler,
    unl_cycle: _Cycler,
    spec: InputSpec,
    config: FinetuneConfig,
    rng: np.random.Generator,
    device: torch.device,
    stats: _Stats,
) -> float:
    """One optimiser step of ``kind`` (supervised / unsupervised / combined); returns its loss."""
    optimizer.zero_grad(set_to_none=True)
    total: Tensor | None = None
    if kind in ("supervised", "combined"):
        assert labelled is not None
        idx = lab_cycle.next()
        x = _inputs(labelled, idx, spec, device)
        if config.augment:
            x = augment(x, rng, config)
        y = torch.from_numpy(labelled.labels[idx]).to(device)
        with frozen_batchnorm(model) if config.freeze_batchnorm else contextlib.nullcontext():
            logits = model(x)
        sup = supervised_loss(logits, y, multi_label=spec.multi_label)
        stats.add("sup_loss", float(sup.detach()))
        total = sup
    if kind in ("unsupervised", "combined"):
        assert unlabelled is not None and atcon is not None
        idx = unl_cycle.next()
        x = _inputs(unlabelled, idx, spec, device)
        if config.augment_unlabelled:
            x = augment(x, rng, config)
        out = atcon(x)
        stats.add("atcon_loss", float(out.loss.detach()))
        stats.add("agreement", float(out.agreement.mean()))
        # Share of the batch explained as each class: a collapse shows up as one class -> 1.0.
        stats.add("atcon_top_class_share", float(torch.bincount(out.targets).max()) / out.targets.numel())
        weighted = out.loss * (config.atcon_weight if kind == "combined" else 1.0)
        total = weighted if total is None else total + weighted
    assert total is not None
    # Only the weights' gradients: the ATCON input passes made the batch a leaf requiring grad,
    # and its (unused) gradient would cost another pass through the double-backward graph.
    total.backward(inputs=[p for p in model.parameters() if p.requires_grad])
    limit = config.atcon_grad_clip if (kind == "unsupervised" and config.atcon_grad_clip) else config.grad_clip
    stats.add(f"grad_norm_{kind}", _step_clip(model, limit))
    optimizer.step()
    return float(total.detach())


def with_overrides(config: FinetuneConfig, **changes: Any) -> FinetuneConfig:
    """``dataclasses.replace`` that also accepts ``atcon={...}`` partial overrides."""
    if isinstance(changes.get("atcon"), Mapping):
        changes["atcon"] = replace(config.atcon, **changes["atcon"])
    return replace(config, **changes)
