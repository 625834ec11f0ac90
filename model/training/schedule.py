"""What an epoch consists of: the labelled subset, the epoch's length and the kind of every step.

Schedules (ATCON.md "Training schedule"); ``Ns``/``Nu`` labelled/unlabelled items, ``Bs``/``Bu``
their batch sizes, ``alpha`` the labelled oversampling factor (not a loss weight):

* ``supervised``: an epoch is ``ceil(alpha * Ns / Bs)`` steps, the same labelled exposure as an
  alternating epoch, so epochs of both modes are comparable (``alpha = 1``: one pass);
* ``unsupervised``: the ATCON loss only; ``ceil(Nu / Bu)`` steps;
* ``alternating`` (the paper's main mode): an epoch is ``ceil(alpha * Ns / Bs)`` labelled and
  ``ceil(Nu / Bu)`` unlabelled steps in a random order drawn per epoch (:func:`epoch_schedule`),
  so a step is labelled with probability ``p = (alpha Ns / Bs) / (alpha Ns / Bs + Nu / Bu)``,
  counted in *batches*: ATCON.md's ``alpha Ns / (alpha Ns + Nu)`` counts items, which with
  ``Bs != Bu`` gives fewer labelled steps than the supervised control (2.2 instead of 4 per epoch
  for Ns = 8, Nu = 700, Bs = 16, Bu = 32, alpha = 8);
* ``combined``: ``L = L_sup(labelled batch) + lambda * L_atcon(unlabelled batch)`` every step;
  ``ceil(max(alpha * Ns / Bs, Nu / Bu))`` steps, each one labelled *and* unlabelled: a step-matched
  control must take :func:`labelled_steps_per_epoch`, not ``ceil(alpha Ns / Bs)``.

Batches are drawn by :func:`epoch_batches` from a generator seeded per epoch, so an epoch is the
same whether the run was resumed before it or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.training.config import MODES, TrainConfig

__all__ = [
    "EpochPlan",
    "epoch_batches",
    "epoch_plan",
    "epoch_schedule",
    "labelled_steps_per_epoch",
    "plan_epoch",
    "select_labelled",
]


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


def labelled_steps_per_epoch(config: TrainConfig, ns: int, nu: int) -> int:
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


def epoch_batches(n: int, batch: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``steps`` index batches of ``min(batch, n)`` items over ``range(n)``, reshuffled at each pass.

    A batch that would straddle two passes takes the rest of one permutation and the start of the
    next, so every batch is full (BatchNorm never sees a batch of one).
    """
    if steps == 0 or n == 0:
        return []
    size = min(batch, n)
    passes = math.ceil(steps * size / n)
    order = np.concatenate([rng.permutation(n) for _ in range(passes)])
    return [order[i * size : (i + 1) * size] for i in range(steps)]


@dataclass
class EpochPlan:
    """The steps of one epoch: their kinds and the index batches they use, in order."""

    kinds: list[str]
    labelled: list[np.ndarray]
    unlabelled: list[np.ndarray]


def plan_epoch(config: TrainConfig, ns: int, nu: int, rng: np.random.Generator) -> EpochPlan:
    """Kinds and index batches of one epoch of ``config`` over ``ns`` labelled and ``nu`` unlabelled items."""
    steps, p_labelled = epoch_plan(config.mode, ns, nu, config.batch_size, config.unlabelled_batch_size, config.alpha)
    if config.steps_per_epoch:
        steps = int(config.steps_per_epoch)
    kinds = epoch_schedule(config.mode, steps, p_labelled, rng)
    n_lab = sum(k in ("supervised", "combined") for k in kinds)
    n_unl = sum(k in ("unsupervised", "combined") for k in kinds)
    return EpochPlan(
        kinds=kinds,
        labelled=epoch_batches(ns, config.batch_size, n_lab, rng),
        unlabelled=epoch_batches(nu, config.unlabelled_batch_size, n_unl, rng),
    )
