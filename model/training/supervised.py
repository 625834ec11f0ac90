"""Supervised training of clip classifiers, in the style of the torchvision reference scripts.

``train_one_epoch`` and ``evaluate`` (under ``torch.inference_mode()``) are the building blocks;
``train_supervised`` runs the epochs, keeps the best weights by validation macro-F1 and can
write/resume a training-state checkpoint ``{model, optimizer, scheduler, epoch, config, ...}``.
``train_demo_model`` is the recipe that produced ``model/assets/demo_tiny3d.pt``.

Loss: BCE with logits for multi-label (each event independent; a clip with no event is all
zeros), cross-entropy for single-label. Class imbalance (events are rare in continuous video)
is handled with BCE ``pos_weight = sqrt(negatives / positives)`` per class, clipped.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from model.device import resolve_device
from model.files import atomic_path
from model.inference import frames_to_tensor, normalize_tensor
from model.training.data import ClipDataset, iter_batches
from model.training.metrics import macro_f1, per_class_f1
from model.training.trainer import show_progress
from model.weights import InputSpec

__all__ = [
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "build_criterion",
    "build_optimizer",
    "evaluate",
    "seed_everything",
    "train_demo_model",
    "train_one_epoch",
    "train_supervised",
]

logger = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "wardwatch-train-state/1"


@dataclass
class TrainConfig:
    """Hyper-parameters of a supervised run (all plain types, stored in training checkpoints).

    ``lr`` Adam learning rate, cosine-annealed to ``lr * final_lr_fraction`` over ``epochs``.
    ``hflip``/``shift``/``brightness``/``colour``/``ramp``/``noise``: augmentation strengths,
    see :func:`augment_batch` (0 or False disables one).
    ``pos_weight``: BCE positive weight = sqrt(negatives/positives) per class, clipped to
    ``[1, max_pos_weight]``. ``progress``: tqdm bars; None = only when stderr is a TTY.
    ``checkpoint_path``: write a resumable training state after every epoch; with ``resume``
    an existing state there is continued.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    final_lr_fraction: float = 0.05
    seed: int = 0
    device: str = "auto"
    hflip: bool = True
    shift: float = 0.08
    brightness: float = 0.25
    colour: float = 0.1
    ramp: float = 0.6
    noise: float = 0.1
    pos_weight: bool = True
    max_pos_weight: float = 4.0
    grad_clip: float | None = 5.0
    eval_batch_size: int = 32
    progress: bool | None = None
    checkpoint_path: str | None = None
    resume: bool = False
    tensorboard_dir: str | None = None


@dataclass
class EvalResult:
    """Validation outcome: mean loss, macro-F1, per-class F1 ``[K]`` and probabilities ``[N, K]``."""

    loss: float
    macro_f1: float
    per_class_f1: list[float]
    probs: np.ndarray

    def as_metrics(self, class_names: list[str]) -> dict[str, Any]:
        """Plain dict for checkpoints and logs (NaN F1 of absent classes becomes None)."""
        return {
            "loss": self.loss,
            "macro_f1": self.macro_f1,
            "per_class_f1": {
                name: (None if math.isnan(v) else v) for name, v in zip(class_names, self.per_class_f1, strict=True)
            },
        }


@dataclass
class TrainResult:
    """What ``train_supervised`` returns. ``model`` holds the best weights (in eval mode)."""

    model: nn.Module
    best_epoch: int
    best: EvalResult | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy Generator for batch order and augmentation."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def augment_batch(
    x: Tensor,
    rng: np.random.Generator,
    *,
    hflip: bool = True,
    shift: float = 0.0,
    brightness: float = 0.0,
    colour: float = 0.0,
    ramp: float = 0.0,
    noise: float = 0.0,
) -> Tensor:
    """Random augmentation of a batch of clips ``[B, 3, T, H, W]`` in pixel units ([0, 1]).

    Each clip gets its own draw:

    * ``hflip``: mirror left-right half of the time (a ward seen from the other side);
    * ``shift``: translate by up to this fraction of H/W, borders replicated (bed placement);
    * ``brightness``: multiply by a gain in ``[1 - b, 1 + b]`` (room lighting);
    * ``colour``: per-channel gains in ``[1 - c, 1 + c]`` (wall, floor and gown tints);
    * ``ramp``: for half of the clips, a gain changing linearly over the clip by up to
      ``+-ramp``, mimicking the lighting-change distractor so that a brightness change over
      time is not taken for movement;
    * ``noise``: for a quarter of the clips, fresh Gaussian noise per frame with sigma up to
      this value, mimicking the sensor-noise distractor.

    Everything except ramp and noise is constant over a clip's frames, so augmentation never
    creates motion that could look like an event. The result is clamped to [0, 1].
    """
    b, _, t = x.shape[:3]
    out = x
    if hflip:
        flip = torch.from_numpy(rng.random(b) < 0.5)
        if bool(flip.any()):
            out = out.clone()
            out[flip] = out[flip].flip(-1)
    if shift > 0:
        h, w = out.shape[-2:]
        ph, pw = max(1, int(round(shift * h))), max(1, int(round(shift * w)))
        padded = F.pad(out.flatten(1, -3), (pw, pw, ph, ph), mode="replicate")
        padded = padded.view(*out.shape[:-2], h + 2 * ph, w + 2 * pw)
        dy = rng.integers(0, 2 * ph + 1, size=b)
        dx = rng.integers(0, 2 * pw + 1, size=b)
        out = torch.stack([padded[i, ..., dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    gain = np.ones((b, 3, t), dtype=np.float32)
    if brightness > 0:
        gain *= rng.uniform(1 - brightness, 1 + brightness, size=(b, 1, 1))
    if colour > 0:
        gain *= rng.uniform(1 - colour, 1 + colour, size=(b, 3, 1))
    if ramp > 0:
        slope = rng.uniform(-ramp, ramp, size=(b, 1, 1)) * (rng.random((b, 1, 1)) < 0.5)
        gain *= 1.0 + slope * np.linspace(-0.5, 0.5, t, dtype=np.float32)[None, None, :]
    out = out * torch.from_numpy(gain.astype(np.float32)).to(out.device)[..., None, None]
    if noise > 0:
        sigma = rng.uniform(0, noise, size=b) * (rng.random(b) < 0.25)
        if sigma.any():
            scale = torch.from_numpy(sigma.astype(np.float32)).to(out.device).view(b, 1, 1, 1, 1)
            out = out + torch.randn_like(out) * scale
    return out.clamp(0.0, 1.0)


def build_criterion(train: ClipDataset, spec: InputSpec, config: TrainConfig, device: torch.device) -> nn.Module:
    """BCE-with-logits (multi-label, optional pos_weight) or cross-entropy (single-label)."""
    if not spec.multi_label:
        return nn.CrossEntropyLoss()
    pos_weight = None
    if config.pos_weight:
        pos = train.positives().astype(np.float64)
        neg = len(train) - pos
        # sqrt of the imbalance: full neg/pos weighting would move an uninformative model's
        # output to 0.5 and flood the review queue with borderline events.
        ratio = np.clip(np.sqrt(neg / np.maximum(pos, 1.0)), 1.0, config.max_pos_weight)
        pos_weight = torch.tensor(ratio, dtype=torch.float32, device=device)
        logger.info("BCE pos_weight per class: %s", np.round(ratio, 2).tolist())
    return nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def build_optimizer(
    model: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with weight decay and a per-epoch cosine schedule."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.epochs), eta_min=config.lr * config.final_lr_fraction
    )
    return optimizer, scheduler


def _targets(labels: np.ndarray, spec: InputSpec, device: torch.device) -> Tensor:
    """Multi-hot float ``[B, K]`` for BCE; class indices ``[B]`` (argmax) for cross-entropy."""
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).to(device)
    return y if spec.multi_label else y.argmax(dim=1)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ClipDataset,
    spec: InputSpec,
    *,
    device: torch.device,
    config: TrainConfig,
    rng: np.random.Generator,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over ``data`` in shuffled mini-batches; returns ``{"loss": mean loss}``.

    BatchNorm runs in train mode. A final batch of a single clip is skipped because BatchNorm
    cannot compute statistics from one sample per channel reliably.
    """
    model.train()
    total, count = 0.0, 0
    batches = list(iter_batches(len(data), config.batch_size, shuffle=True, rng=rng))
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not show_progress(config.progress))
    for idx in bar:
        if idx.size < 2 and len(data) > 1:
            continue
        x = frames_to_tensor(data.frames[idx], spec, normalize=False).to(device, non_blocking=True)
        x = augment_batch(
            x,
            rng,
            hflip=config.hflip,
            shift=config.shift,
            brightness=config.brightness,
            colour=config.colour,
            ramp=config.ramp,
            noise=config.noise,
        )
        x = normalize_tensor(x, spec)
        y = _targets(data.labels[idx], spec, device)
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * idx.size
        count += int(idx.size)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return {"loss": total / max(count, 1)}


def evaluate(
    model: nn.Module,
    criterion: nn.Module | None,
    data: ClipDataset,
    spec: InputSpec,
    *,
    device: torch.device,
    batch_size: int = 32,
) -> EvalResult:
    """Loss, macro-F1 and per-class F1 on ``data`` (eval mode, ``torch.inference_mode()``).

    Multi-label: sigmoid > 0.5 per class; single-label: argmax of the softmax (ATCON.md).
    """
    model.eval()
    probs: list[np.ndarray] = []
    total = 0.0
    with torch.inference_mode():
        for idx in iter_batches(len(data), batch_size):
            x = frames_to_tensor(data.frames[idx], spec).to(device)
            logits = model(x).float()
            if criterion is not None:
                total += float(criterion(logits, _targets(data.labels[idx], spec, device))) * idx.size
            p = torch.sigmoid(logits) if spec.multi_label else torch.softmax(logits, dim=1)
            probs.append(p.cpu().numpy())
    k = data.num_classes
    all_probs = np.concatenate(probs) if probs else np.zeros((0, k), dtype=np.float32)
    targets = data.labels if spec.multi_label else data.labels.argmax(axis=1)
    return EvalResult(
        loss=total / max(len(data), 1),
        macro_f1=macro_f1(all_probs, targets, multi_label=spec.multi_label),
        per_class_f1=per_class_f1(all_probs, targets, multi_label=spec.multi_label).tolist(),
        probs=all_probs,
    )


def _save_train_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save`` of a training state (loadable with ``weights_only=True``)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_supervised(
    model: nn.Module,
    train: ClipDataset,
    val: ClipDataset | None,
    *,
    input_spec: InputSpec,
    config: TrainConfig,
    on_epoch: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` and return it with the best weights by validation macro-F1.

    Ties in macro-F1 go to the lower validation loss. Without ``val`` the last epoch is kept.
    ``on_epoch(epoch, row)`` is called after every epoch with the history row (for progress
    reporting in the server's job table). Deterministic for a given ``config.seed`` on CPU.
    """
    start_time = time.perf_counter()
    device = resolve_device(config.device)
    rng = seed_everything(config.seed)
    model.to(device)
    criterion = build_criterion(train, input_spec, config, device)
    optimizer, scheduler = build_optimizer(model, config)
    history: list[dict[str, Any]] = []
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_state: dict[str, Tensor] | None = None
    best_epoch = -1
    first_epoch = 0
    state_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if state_path is not None and config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("format") != TRAIN_STATE_FORMAT:
            raise ValueError(f"{state_path} is not a Wardwatch training state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch = int(state["epoch"]) + 1
        history = list(state["history"])
        best_state = state["best_state"]
        best_epoch = int(state["best_epoch"])
        best_key = (float(state["best_key"][0]), float(state["best_key"][1]))
        rng = np.random.default_rng([config.seed, first_epoch])
        logger.info("resuming from %s at epoch %d", state_path, first_epoch)

    writer = None
    if config.tensorboard_dir:
        from torch.utils.tensorboard import SummaryWriter  # optional; imported only when asked

        writer = SummaryWriter(config.tensorboard_dir)
    class_names = train.class_names
    best: EvalResult | None = None
    try:
        for epoch in range(first_epoch, config.epochs):
            t0 = time.perf_counter()
            train_stats = train_one_epoch(
                model, criterion, optimizer, train, input_spec, device=device, config=config, rng=rng, epoch=epoch
            )
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_stats["loss"], "lr": lr}
            if val is not None and len(val):
                result = evaluate(model, criterion, val, input_spec, device=device, batch_size=config.eval_batch_size)
                row.update({f"val_{k}": v for k, v in result.as_metrics(class_names).items()})
                key = (result.macro_f1, -result.loss)
            else:
                result, key = None, (float(epoch), 0.0)
            if key > best_key:
                best_key, best_epoch, best = key, epoch, result
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            logger.info(
                "epoch %d/%d train_loss=%.4f val_loss=%s val_macro_f1=%s (%.1fs)",
                epoch + 1,
                config.epochs,
                row["train_loss"],
                f"{row['val_loss']:.4f}" if "val_loss" in row else "-",
                f"{row['val_macro_f1']:.3f}" if "val_macro_f1" in row else "-",
                row["seconds"],
            )
            if writer is not None:
                writer.add_scalar("train/loss", row["train_loss"], epoch)
                writer.add_scalar("train/lr", lr, epoch)
                if "val_loss" in row:
                    writer.add_scalar("val/loss", row["val_loss"], epoch)
                    writer.add_scalar("val/macro_f1", row["val_macro_f1"], epoch)
            if state_path is not None:
                _save_train_state(
                    state_path,
                    {
                        "format": TRAIN_STATE_FORMAT,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "config": asdict(config),
                        "history": history,
                        "best_state": best_state,
                        "best_epoch": best_epoch,
                        "best_key": list(best_key),
                    },
                )
            if on_epoch is not None:
                on_epoch(epoch, row)
    finally:
        if writer is not None:
            writer.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if best is None and best_epoch >= 0 and val is not None and len(val):
        best = evaluate(model, criterion, val, input_spec, device=device, batch_size=config.eval_batch_size)
    return TrainResult(
        model=model, best_epoch=best_epoch, best=best, history=history, seconds=time.perf_counter() - start_time
    )


# --------------------------------------------------------------------------------------------
# The demo recipe (reproduces model/assets/demo_tiny3d.pt)
# --------------------------------------------------------------------------------------------

DEMO_CLASS_NAMES: tuple[str, ...] = ("bed_exit", "fall", "rhythmic_movement")
# 8 frames at 4 fps = 2 s clips: rhythmic movement at 1.0-1.5 Hz gives 2-3 cycles per clip,
# sampled 2.7-4 times per cycle (above Nyquist), and a fall (0.5-0.8 s drop) spans 2-3 frames.
# 80x60 keeps the ward video's 4:3 aspect with limbs still 1-2 px thick. Twice the frames or
# 96x72 pixels learned no better here and cost 2-3x the CPU time.
DEMO_INPUT_SPEC = InputSpec(frames=8, sample_fps=4.0, size=(80, 60))
DEMO_TRAIN_CONFIG = TrainConfig(epochs=30, batch_size=16, lr=3e-3)
DEMO_VALIDATION_SEED_OFFSET = 500  # validation video seed = seed + 500 (never a training seed)
DEMO_VALIDATION_SECONDS = 180.0


def train_demo_model(
    out_path: str | os.PathLike[str],
    *,
    arch: str = "tiny3d",
    videos: int = 20,
    seconds: float = 60.0,
    epochs: int = DEMO_TRAIN_CONFIG.epochs,
    seed: int = 0,
    device: str = "auto",
    work_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    input_spec: InputSpec = DEMO_INPUT_SPEC,
    events_per_minute: float = 5.0,
    train_stride_seconds: float | None = None,
    pretrained: str | None = None,
) -> dict[str, Any]:
    """Train the demo classifier on synthetic ward video and save a Wardwatch checkpoint.

    Training videos use seeds ``seed .. seed+videos-1`` (``seconds`` long each, with a denser
    ``events_per_minute`` than the default generator so every class has enough positives; many
    short videos rather than a few long ones, because each seed is a new room layout and
    generalising across rooms is the hard part); validation uses one separate 180 s video (seed
    ``seed + 500``) at the generator's default event rate. Training clips overlap by half
    (stride = clip/2 unless ``train_stride_seconds``) for twice the samples at no generation
    cost; validation clips do not overlap, as in the worker.
    Returns a summary dict: path, sha256, size, class names, input spec, metrics, timings.
    Videos are written to ``work_dir`` (a temporary directory when None, removed afterwards).
    ``pretrained``: start from these weights (a :mod:`model.pretrained` spec such as
    ``torchvision:r3d_18`` or a file), checked before the data is generated so a missing file
    fails at once.
    """
    import tempfile

    from model.pretrained import build_pretrained_model, check_pretrained
    from model.training.synthetic_data import make_synthetic_dataset
    from model.weights import save_checkpoint

    if pretrained:
        check_pretrained(pretrained, arch=arch)
    t0 = time.perf_counter()
    stride = input_spec.clip_seconds / 2 if train_stride_seconds is None else train_stride_seconds
    with tempfile.TemporaryDirectory(prefix="wardwatch-demo-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        train, _ = make_synthetic_dataset(
            root / "train",
            input_spec,
            seeds=range(seed, seed + videos),
            seconds=seconds,
            class_names=DEMO_CLASS_NAMES,
            stride_seconds=stride,
            synth_options={"events_per_minute": events_per_minute},
            progress=progress,
        )
        val, _ = make_synthetic_dataset(
            root / "val",
            input_spec,
            seeds=[seed + DEMO_VALIDATION_SEED_OFFSET],
            seconds=DEMO_VALIDATION_SECONDS,
            class_names=DEMO_CLASS_NAMES,
            progress=progress,
        )
    data_seconds = time.perf_counter() - t0
    logger.info(
        "demo data: %d train clips (positives %s), %d val clips (positives %s) in %.1fs",
        len(train),
        train.positives().tolist(),
        len(val),
        val.positives().tolist(),
        data_seconds,
    )
    config = replace(DEMO_TRAIN_CONFIG, epochs=epochs, seed=seed, device=device, progress=progress)
    torch.manual_seed(seed)
    model = build_pretrained_model(arch, num_classes=len(DEMO_CLASS_NAMES), pretrained=pretrained)
    result = train_supervised(model, train, val, input_spec=input_spec, config=config)
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "epochs": epochs,
        "train_videos": videos,
        "video_seconds": seconds,
        "train_clips": len(train),
        "val_clips": len(val),
        "seed": seed,
        "train_seconds": round(result.seconds, 1),
    }
    if pretrained:
        metrics["pretrained"] = pretrained
    if result.best is not None:
        metrics.update({f"val_{k}": v for k, v in result.best.as_metrics(list(DEMO_CLASS_NAMES)).items()})
    sha = save_checkpoint(
        out_path,
        model=result.model.cpu(),
        arch=arch,
        class_names=DEMO_CLASS_NAMES,
        input_spec=input_spec,
        metrics=metrics,
    )
    total = time.perf_counter() - t0
    logger.info("demo model saved to %s (%.1fs total, val macro-F1 %s)", out_path, total, metrics.get("val_macro_f1"))
    return {
        "path": str(out_path),
        "sha256": sha,
        "size_bytes": Path(out_path).stat().st_size,
        "arch": arch,
        "class_names": list(DEMO_CLASS_NAMES),
        "input_spec": input_spec.to_dict(),
        "metrics": metrics,
        "history": result.history,
        "data_seconds": round(data_seconds, 1),
        "total_seconds": round(total, 1),
    }
