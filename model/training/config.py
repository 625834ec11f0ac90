"""``TrainConfig``: every hyper-parameter of a training run, in plain types (stored in checkpoints).

One config for the one loop (:mod:`model.training.loop`): the demo recipe, the server's fine-tune
jobs and the ATCON experiment's baselines, controls and ATCON runs differ only in its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from model.attribution.consistency import ATCONConfig
from model.training.augment import AugmentConfig

__all__ = ["LR_SCHEDULES", "MODES", "TrainConfig"]

MODES: tuple[str, ...] = ("supervised", "unsupervised", "alternating", "combined")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of a training or fine-tuning run.

    Attributes:
        mode: the step strategy: ``supervised`` / ``unsupervised`` / ``alternating`` /
            ``combined`` (see :mod:`model.training.schedule`).
        epochs: number of epochs.
        lr: Adam learning rate. The paper used 1e-6..8e-6 on pretrained ResNet-50.
        lr_schedule: ``constant`` (ATCON.md) or ``cosine`` (annealed per epoch to
            ``lr * final_lr_fraction``; the demo recipe from scratch).
        weight_decay: Adam L2 weight decay.
        batch_size: labelled batch size ``Bs``.
        unlabelled_batch_size: unlabelled batch size ``Bu``.
        alpha: labelled oversampling factor: ``ceil(alpha Ns / Bs)`` labelled steps per epoch.
        atcon_weight: ``lambda`` of the combined mode.
        grad_clip: max global gradient norm for every step (None = no clipping).
        atcon_grad_clip: max norm for unsupervised steps only (None = ``grad_clip``).
        atcon: the ATCON loss options.
        reflect_padding: switch convolutions to reflect/replicate padding before training.
        augment: augment labelled batches; ``augment_unlabelled``: unlabelled ones too.
        augmentation: the strengths (:class:`~model.training.augment.AugmentConfig`).
        pos_weight: multi-label BCE positive weight ``sqrt(negatives / positives)`` per class of
            the labelled set, clipped to ``[1, max_pos_weight]`` (events are rare).
        select_initial: the starting weights compete for "best" (fine-tuning never returns a
            model worse on validation than its start).
        freeze_batchnorm: BatchNorm statistics frozen in supervised steps too (a fine-tuning
            stabiliser for small labelled batches; ATCON steps always freeze them).
        steps_per_epoch: override the computed epoch length (a step-matched control).
        seed: seeds the model-independent randomness (batches, step kinds, augmentation,
            dropout) per epoch, so a resumed run continues exactly.
        device: ``auto`` / ``cpu`` / ``cuda[:N]``.
        eval_batch_size: validation batch size.
        num_workers: DataLoader worker processes that decode batches while the model computes
            (0 = in the training process; useful when frames are decoded from video lazily).
        progress: tqdm bars (None = only when stderr is a terminal).
        log_every: steps between progress callbacks / TensorBoard points.
        tensorboard_dir: write TensorBoard scalars here (None = off).
        checkpoint_path: resumable training state, rewritten atomically after each epoch.
        resume: continue from ``checkpoint_path`` when it exists.
    """

    mode: str = "alternating"
    epochs: int = 10
    lr: float = 1e-5
    lr_schedule: str = "constant"
    final_lr_fraction: float = 0.05
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
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    pos_weight: bool = False
    max_pos_weight: float = 4.0
    select_initial: bool = True
    freeze_batchnorm: bool = False
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 64
    num_workers: int = 0
    progress: bool | None = None
    log_every: int = 10
    tensorboard_dir: str | None = None
    checkpoint_path: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.atcon, Mapping):
            self.atcon = ATCONConfig(**self.atcon)
        if isinstance(self.augmentation, Mapping):
            self.augmentation = AugmentConfig(**self.augmentation)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.unlabelled_batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch sizes >= 1")
        if not self.lr > 0 or self.alpha <= 0 or self.atcon_weight < 0:
            raise ValueError("lr and alpha must be > 0 and atcon_weight >= 0")
        if self.num_workers < 0 or self.log_every < 1:
            raise ValueError("num_workers must be >= 0 and log_every >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (nested options as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from plain hyper-parameters; unknown keys are refused (typos must not pass)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(data))

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """``dataclasses.replace`` that also takes partial ``atcon={...}`` / ``augmentation={...}``."""
        for name in ("atcon", "augmentation"):
            if isinstance(changes.get(name), Mapping):
                changes[name] = replace(getattr(self, name), **changes[name])
        return replace(self, **changes)
