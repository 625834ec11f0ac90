"""``ExperimentConfig``: everything an ATCON experiment depends on, and its command line.

Each field is declared once, with its help text (and, where needed, its choices or flag) in the
field's metadata; :func:`build_parser` turns the dataclass into the argparse parser of
``wardwatch experiment atcon`` and :func:`config_from_args` back, so an option cannot exist in one
place and be missing in another.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from model.attribution.agreement import SIMILARITIES
from model.attribution.consistency import FINE_METHODS, RESOLUTION_MATCHES
from model.nets import ARCHITECTURES
from model.training.config import MODES

__all__ = ["ExperimentConfig", "build_parser", "config_from_args"]


def _opt(default: Any = MISSING, help: str = "", **cli: Any) -> Any:
    """A field with its command-line metadata (``flag``, ``choices``, ``nargs``)."""
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class ExperimentConfig:
    """Everything a run depends on (stored in the results JSON)."""

    data: str = _opt(help="imagefolder:PATH | voc:PATH | csv:PATH[,K=V] | synthetic[:K=V,...]")
    arch: str = _opt("tiny2d", "network architecture", choices=ARCHITECTURES)
    images_per_class: list[int] = _opt([2], "labelled items per class (several: one run each)", nargs="+")
    seeds: int = _opt(3, "seeds 0..K-1 (the labelled draw and the training randomness)")
    first_seed: int = _opt(0, "first seed (a pre-registered test uses seeds never used while choosing)")
    out: str = _opt("results.json", "results JSON (Markdown and PNG are written beside it)")
    phase: str = _opt(
        "validation",
        "score on the validation split (choosing a configuration) or, once, on the test split (the "
        "configuration is registered in OUT.registration.json before any test item is scored)",
        choices=("validation", "test"),
    )
    epochs: int = _opt(30, "baseline epochs")
    lr: float = _opt(1e-3, "baseline learning rate")
    finetune_epochs: int = _opt(10, "fine-tuning epochs (ATCON and control)")
    finetune_lr: float = _opt(1e-5, "fine-tuning learning rate")
    mode: str = _opt("alternating", "ATCON schedule", choices=tuple(m for m in MODES if m != "supervised"))
    alpha: float = _opt(8.0, "labelled oversampling factor")
    atcon_weight: float = _opt(0.1, "combined-mode weight lambda", flag="--lambda")
    batch_size: int = _opt(16, "labelled batch size")
    unlabelled_batch_size: int = _opt(32, "unlabelled batch size")
    grad_clip: float | None = _opt(5.0, "max gradient norm (0 = off)")
    atcon_grad_clip: float | None = _opt(None, "max gradient norm of ATCON steps (0 or unset: --grad-clip)")
    weight_decay: float = _opt(0.0, "Adam weight decay")
    resolution_match: str = _opt("mask", "ATCON resolution match", choices=RESOLUTION_MATCHES)
    similarity: str = _opt("pearson", "ATCON similarity", choices=SIMILARITIES)
    fine_method: str = _opt("guided_backprop", "ATCON fine map", choices=FINE_METHODS)
    mask_intensity: float = _opt(8.0, "slope k of the soft mask")
    detach_mask: bool = _opt(False, "ablation: no gradient through the mask")
    reflect_padding: bool = _opt(False, "reflect/replicate padding in every convolution")
    ignore_background: bool = _opt(False, "single-label data: ATCON explains the top class other than 'none'")
    fully_balanced: bool = _opt(False, "exactly N single-label items per class")
    freeze_bn: str = _opt(
        "finetune",
        "BatchNorm frozen in supervised steps: never, while fine-tuning, always",
        choices=("none", "finetune", "all"),
    )
    control: bool = _opt(False, "also fine-tune without unlabelled data (step-matched control)")
    image_size: int | None = _opt(None, "resize images to this square size")
    test_fraction: float = _opt(0.3, "share of recordings (or items) in the test split")
    val_fraction: float = _opt(0.15, "share of recordings (or items) in the validation split")
    bootstrap: int = _opt(1000, "bootstrap resamples")
    localisation: bool = _opt(True, "localisation metrics where the data has regions", flag="--no-localisation")
    device: str = _opt("cpu", "auto | cpu | cuda[:N]")
    work_dir: str | None = _opt(None, "generated data and cached runs")
    cache_baselines: bool = _opt(True, "recompute cached baselines and runs", flag="--no-cache")
    progress: bool | None = _opt(None, "tqdm progress bars (default: on a terminal)")
    pretrained: str | None = _opt(None, "start every model from torchvision:resnet18|resnet50|r3d_18 or a FILE")
    tensorboard_dir: str | None = _opt(None, "write TensorBoard scalars here", flag="--tensorboard")
    threads: int | None = _opt(None, "torch CPU threads")


def _flag(f: Any) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def build_parser(prog: str = "wardwatch experiment atcon") -> argparse.ArgumentParser:
    """The argparse parser of ``wardwatch experiment atcon``, one option per config field."""
    parser = argparse.ArgumentParser(prog=prog, description="ATCON vs supervised baseline on a small labelled set.")
    hints = typing.get_type_hints(ExperimentConfig)
    for f in fields(ExperimentConfig):
        kind = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", "")}
        default = (
            f.default
            if f.default is not MISSING
            else (f.default_factory() if f.default_factory is not MISSING else None)
        )
        if f.default is MISSING and f.default_factory is MISSING:
            kwargs["required"] = True
        elif kind is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        elif kind == bool | None:
            kwargs.update(action="store_true", default=None)
        else:
            kwargs["default"] = default
        if "action" not in kwargs:
            kwargs["type"] = _scalar(kind)
            if typing.get_origin(kind) is list:
                kwargs["nargs"] = f.metadata.get("nargs", "+")
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f), **kwargs)
    return parser


def _scalar(kind: Any) -> type:
    """``int`` for ``int``, ``int | None`` and ``list[int]``; likewise float and str."""
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    base = args[0]
    return typing.get_args(base)[0] if typing.get_origin(base) is list else base


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of parsed arguments (a gradient clip of 0 means none)."""
    values = dict(vars(args))
    for name in ("grad_clip", "atcon_grad_clip"):
        if values.get(name) == 0:
            values[name] = None
    return ExperimentConfig(**values)
