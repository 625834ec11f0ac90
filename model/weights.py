"""Checkpoints: weights plus everything needed to use them (architecture, classes, input spec).

A Wardwatch checkpoint is a ``torch.save``-d dict of plain Python types and tensors only, so
it loads with ``torch.load(weights_only=True)`` — no pickled classes, no arbitrary code run on
load (a checkpoint may come from a model-version upload)::

    {
        "format": "wardwatch-checkpoint/1",
        "arch": "tiny3d",
        "class_names": ["bed_exit", "fall", "rhythmic_movement"],
        "input_spec": {"frames": 16, "sample_fps": 8.0, "size": [112, 112], "mean": [...],
                       "std": [...], "multi_label": True},
        "metrics": {...},            # plain JSON-like values
        "state_dict": {name: tensor},
    }
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.device import resolve_device
from model.nets import ARCHITECTURES, build_model

__all__ = ["CHECKPOINT_FORMAT", "InputSpec", "LoadedModel", "file_sha256", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "wardwatch-checkpoint/1"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input; stored in the checkpoint so ingest cuts matching clips.

    ``frames`` frames per clip sampled at ``sample_fps`` (Hz), resized to ``size`` = (width,
    height) pixels, RGB scaled to [0, 1] then normalised per channel with ``mean``/``std``.
    ``multi_label``: independent sigmoid per class (a clip with every score low = no event);
    False means softmax over classes (exactly one class per clip).
    """

    frames: int = 16
    sample_fps: float = 8.0
    size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    multi_label: bool = True

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("InputSpec.frames must be >= 1")
        if not self.sample_fps > 0:
            raise ValueError("InputSpec.sample_fps must be > 0")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError("InputSpec.size must be (width, height) with positive values")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("InputSpec.mean/std must have 3 values and std must be > 0")

    @property
    def clip_seconds(self) -> float:
        """Clip length in seconds: ``frames / sample_fps``."""
        return self.frames / self.sample_fps

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (lists, not tuples) for checkpoints, JSON and the database."""
        data = asdict(self)
        for key in ("size", "mean", "std"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; unknown keys are rejected so typos do not pass silently."""
        unknown = set(data) - {"frames", "sample_fps", "size", "mean", "std", "multi_label"}
        if unknown:
            raise ValueError(f"unknown input_spec keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = dict(data)
        if "frames" in kwargs:
            kwargs["frames"] = int(kwargs["frames"])
        if "sample_fps" in kwargs:
            kwargs["sample_fps"] = float(kwargs["sample_fps"])
        if "multi_label" in kwargs:
            kwargs["multi_label"] = bool(kwargs["multi_label"])
        for key in ("size", "mean", "std"):
            if key in kwargs:
                cast = int if key == "size" else float
                kwargs[key] = tuple(cast(v) for v in kwargs[key])
        return cls(**kwargs)


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode, on ``device``) with its checkpoint metadata.

    ``sha256`` is the hex digest of the checkpoint file: the identity of the model version.
    """

    model: nn.Module
    arch: str
    class_names: list[str]
    input_spec: InputSpec
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    path: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any, where: str = "metrics") -> Any:
    """Convert metrics to types ``torch.load(weights_only=True)`` accepts (and JSON can hold).

    numpy / torch scalars become Python numbers, arrays become lists, tuples become lists,
    NaN and infinities become None.
    Anything else (objects, functions) is refused: it would make the checkpoint unloadable
    under ``weights_only=True``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN/inf are not JSON (the server stores metrics)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[]") for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return _plain(tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint (use plain types)")


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    arch: str,
    class_names: Sequence[str],
    input_spec: InputSpec,
    metrics: Mapping[str, Any] | None = None,
) -> str:
    """Write a Wardwatch checkpoint atomically and return the file's SHA-256 (hex).

    The state dict is copied to CPU so the file loads on any machine. The file is written to a
    temporary name in the same directory and renamed, so a crash never leaves a half-written
    checkpoint under the final name (a server might be watching it).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    names = [str(n) for n in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError("class_names must be a non-empty list of distinct names")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "class_names": names,
        "input_spec": input_spec.to_dict(),
        "metrics": _plain(dict(metrics or {})),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; other processes (server, worker) must read it
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    sha = file_sha256(target)
    logger.info("saved %s checkpoint (%d classes) to %s sha256=%s", arch, len(names), target, sha[:12])
    return sha


def _read_payload(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with every failure turned into a clear ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path} is not a Wardwatch checkpoint (could not be loaded safely: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a Wardwatch checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    missing = {"arch", "class_names", "input_spec", "state_dict"} - set(payload)
    if missing:
        raise ValueError(f"{path} is an incomplete Wardwatch checkpoint: missing {sorted(missing)}")
    return payload


def load_checkpoint(path: str | os.PathLike[str], *, device: str | torch.device = "auto") -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint` into an eval-mode model on ``device``.

    Uses ``torch.load(weights_only=True)``: only tensors and plain types are unpickled.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    Wardwatch checkpoint, names an unknown architecture, or whose weights do not fit it.
    """
    target = Path(path)
    payload = _read_payload(target)
    arch = payload["arch"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"{target}: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    class_names = [str(n) for n in payload["class_names"]]
    if not class_names:
        raise ValueError(f"{target}: checkpoint has no class names")
    input_spec = InputSpec.from_dict(payload["input_spec"])
    model = build_model(arch, num_classes=len(class_names))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{target}: weights do not match architecture {arch!r}: {exc}") from exc
    dev = resolve_device(device)
    model.to(dev).eval()
    metrics = payload.get("metrics") or {}
    sha = file_sha256(target)
    logger.info("loaded %s checkpoint %s on %s (classes: %s)", arch, target, dev, ", ".join(class_names))
    return LoadedModel(
        model=model,
        arch=arch,
        class_names=class_names,
        input_spec=input_spec,
        metrics=dict(metrics),
        sha256=sha,
        path=str(target),
        device=dev,
    )
