"""The demo model's recipe: the classifier behind ``model/assets/demo_tiny3d.pt``.

Synthetic ward video in, a Wardwatch checkpoint out, trained through the one training loop
(:func:`model.training.loop.train`, supervised mode) like every other model of the project.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from model.training.config import TrainConfig
from model.training.loop import train
from model.training.training_data import TrainingData
from model.weights import InputSpec

__all__ = ["DEMO_CLASS_NAMES", "DEMO_INPUT_SPEC", "DEMO_TRAIN_CONFIG", "train_demo_model"]

logger = logging.getLogger(__name__)

DEMO_CLASS_NAMES: tuple[str, ...] = ("bed_exit", "fall", "rhythmic_movement")
# 8 frames at 4 fps = 2 s clips: rhythmic movement at 1.0-1.5 Hz gives 2-3 cycles per clip,
# sampled 2.7-4 times per cycle (above Nyquist), and a fall (0.5-0.8 s drop) spans 2-3 frames.
# 80x60 keeps the ward video's 4:3 aspect with limbs still 1-2 px thick. Twice the frames or
# 96x72 pixels learned no better here and cost 2-3x the CPU time.
DEMO_INPUT_SPEC = InputSpec(frames=8, sample_fps=4.0, size=(80, 60))
# From scratch: one pass over the clips per epoch (alpha 1), cosine-annealed Adam, BCE with a
# positive weight against rare events, the default (ward-video) augmentation.
DEMO_TRAIN_CONFIG = TrainConfig(
    mode="supervised",
    epochs=30,
    batch_size=16,
    lr=3e-3,
    lr_schedule="cosine",
    final_lr_fraction=0.05,
    weight_decay=1e-4,
    alpha=1.0,
    pos_weight=True,
    select_initial=False,
    eval_batch_size=32,
)
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
    from model.pretrained import build_pretrained_model, check_pretrained
    from model.weights import save_checkpoint

    if pretrained:
        check_pretrained(pretrained, arch=arch)
    t0 = time.perf_counter()
    stride = input_spec.clip_seconds / 2 if train_stride_seconds is None else train_stride_seconds
    train_clips, val_clips = _demo_clips(
        work_dir,
        input_spec,
        seed=seed,
        videos=videos,
        seconds=seconds,
        stride=stride,
        events_per_minute=events_per_minute,
        progress=progress,
    )
    data_seconds = time.perf_counter() - t0
    logger.info(
        "demo data: %d train clips (positives %s), %d val clips (positives %s) in %.1fs",
        len(train_clips),
        train_clips.positives().tolist(),
        len(val_clips),
        val_clips.positives().tolist(),
        data_seconds,
    )
    config = DEMO_TRAIN_CONFIG.with_overrides(epochs=epochs, seed=seed, device=device, progress=progress)
    torch.manual_seed(seed)
    model = build_pretrained_model(arch, num_classes=len(DEMO_CLASS_NAMES), pretrained=pretrained)
    result = train(model, labelled=train_clips, unlabelled=None, validation=val_clips, spec=input_spec, config=config)
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "epochs": epochs,
        "train_videos": videos,
        "video_seconds": seconds,
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
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


def _demo_clips(
    work_dir: str | os.PathLike[str] | None,
    spec: InputSpec,
    *,
    seed: int,
    videos: int,
    seconds: float,
    stride: float,
    events_per_minute: float,
    progress: bool,
) -> tuple[TrainingData, TrainingData]:
    """Training clips of ``videos`` synthetic videos and validation clips of one separate video."""
    import tempfile

    from model.training.synthetic_data import make_synthetic_dataset

    with tempfile.TemporaryDirectory(prefix="wardwatch-demo-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        train_clips, _ = make_synthetic_dataset(
            root / "train",
            spec,
            seeds=range(seed, seed + videos),
            seconds=seconds,
            class_names=DEMO_CLASS_NAMES,
            stride_seconds=stride,
            synth_options={"events_per_minute": events_per_minute},
            progress=progress,
        )
        val_clips, _ = make_synthetic_dataset(
            root / "val",
            spec,
            seeds=[seed + DEMO_VALIDATION_SEED_OFFSET],
            seconds=DEMO_VALIDATION_SECONDS,
            class_names=DEMO_CLASS_NAMES,
            progress=progress,
        )
    return train_clips, val_clips
