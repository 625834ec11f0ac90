"""Pretrained starting points: torchvision ImageNet / Kinetics backbones, or weights from a local file.

Why: a hospital fine-tunes on a few hundred reviewed clips. A backbone that has already seen millions
of images (ImageNet) or clips (Kinetics-400) learns from so few examples far better than random
weights, so ``wardwatch train --pretrained SPEC`` starts from one. A spec is one of:

* ``torchvision:resnet18`` -- ``ResNet18_Weights.IMAGENET1K_V1`` for arch ``resnet18``;
* ``torchvision:resnet50`` -- ``ResNet50_Weights.IMAGENET1K_V2`` for arch ``resnet50`` (torchvision's
  default: 80.9 % top-1 against 76.1 % for V1, same architecture); ``torchvision:resnet50:IMAGENET1K_V1``
  picks V1 (any member of the weights enum can be named this way);
* ``torchvision:r3d_18`` -- ``R3D_18_Weights.KINETICS400_V1`` (video) for arch ``r3d_18``;
* anything else is a file path: a state dict saved with ``torch.save`` (e.g. a torchvision ``.pth``
  copied from elsewhere) or a Wardwatch checkpoint (:mod:`model.weights`) of the same architecture.

torchvision weights are read through torchvision's weights API, i.e. from torch's hub cache
``<torch.hub.get_dir()>/checkpoints/<basename of the weights URL>`` (``$TORCH_HOME/hub/checkpoints``,
by default ``~/.cache/torch/hub/checkpoints``). Wards usually have no internet, so a file that is not
in the cache is a :class:`PretrainedWeightsMissingError` that says which file to put where -- nothing
is downloaded unless the caller passes ``allow_download=True``.

Everything except the classifier head (``fc.*``) is loaded: the head's shape depends on the number
of classes, and the pretraining classes (ImageNet, Kinetics, another ward's events) are not ours,
so the new head keeps its fresh initialisation. Every file is read with ``torch.load(weights_only=
True)``: only tensors and plain types are unpickled, never code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum
from torchvision.models.video import R3D_18_Weights

from model.nets import build_model, is_video_arch
from model.weights import CHECKPOINT_FORMAT

__all__ = [
    "HEAD_PREFIX",
    "TORCHVISION_PREFIX",
    "TORCHVISION_WEIGHTS",
    "PretrainedReport",
    "PretrainedSpec",
    "PretrainedWeightsError",
    "PretrainedWeightsMissingError",
    "build_pretrained_model",
    "check_pretrained",
    "hub_checkpoint_dir",
    "hub_checkpoint_file",
    "load_pretrained",
    "parse_pretrained_spec",
]

logger = logging.getLogger(__name__)

TORCHVISION_PREFIX = "torchvision:"
# The classifier of every project architecture (tiny nets, FrameResNet, VideoResNet) is ``fc``.
HEAD_PREFIX = "fc."
# How many offending keys an error message names: enough to see the pattern, short enough to read.
_KEYS_IN_MESSAGE = 4

# torchvision model name -> (project architecture, weights enum, default member).
TORCHVISION_WEIGHTS: dict[str, tuple[str, type[WeightsEnum], str]] = {
    "resnet18": ("resnet18", ResNet18_Weights, "IMAGENET1K_V1"),
    "resnet50": ("resnet50", ResNet50_Weights, "IMAGENET1K_V2"),
    "r3d_18": ("r3d_18", R3D_18_Weights, "KINETICS400_V1"),
}


class PretrainedWeightsError(ValueError):
    """A ``--pretrained`` spec that cannot be used: unknown, unavailable or not fitting the model."""


class PretrainedWeightsMissingError(PretrainedWeightsError):
    """The weights file is not on disk. ``path`` is where it was expected; ``url`` (torchvision
    weights only) is where a machine with internet can fetch it."""

    def __init__(self, message: str, *, path: Path, url: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.url = url


@dataclass(frozen=True)
class PretrainedSpec:
    """A parsed spec: torchvision weights (``weights`` and the ``arch`` they fit) or a file ``path``."""

    text: str
    weights: WeightsEnum | None = None
    arch: str | None = None
    path: Path | None = None

    @property
    def description(self) -> str:
        """Human-readable origin for logs and reports, e.g. ``ResNet18_Weights.IMAGENET1K_V1``."""
        if self.weights is not None:
            return f"{type(self.weights).__name__}.{self.weights.name}"
        return str(self.path)


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_pretrained` did, for logs and checkpoint metrics.

    ``source``: the weights (``ResNet18_Weights.IMAGENET1K_V1``, ``state dict``, ``Wardwatch checkpoint
    (tiny3d)``); ``path``: the file read; ``loaded_keys``: tensors copied into the model;
    ``skipped_head_keys``: the file's classifier entries that were left out.
    """

    spec: str
    source: str
    path: str
    loaded_keys: int
    skipped_head_keys: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), storable in checkpoint metrics and JSON."""
        data = asdict(self)
        data["skipped_head_keys"] = list(self.skipped_head_keys)
        return data


# --------------------------------------------------------------------------------------------
# Specs and the hub cache
# --------------------------------------------------------------------------------------------


def parse_pretrained_spec(spec: str) -> PretrainedSpec:
    """Parse ``torchvision:NAME[:WEIGHTS]`` or a file path (existence is checked later, on use).

    Raises :class:`PretrainedWeightsError` for an empty spec, an unknown torchvision name or an
    unknown weights member, listing what is available.
    """
    text = spec.strip()
    if not text:
        raise PretrainedWeightsError("empty --pretrained spec; expected torchvision:NAME or a file path")
    if not text.startswith(TORCHVISION_PREFIX):
        return PretrainedSpec(text=text, path=Path(text).expanduser())
    name, _, member = text[len(TORCHVISION_PREFIX) :].partition(":")
    if name not in TORCHVISION_WEIGHTS:
        known = ", ".join(TORCHVISION_PREFIX + n for n in TORCHVISION_WEIGHTS)
        raise PretrainedWeightsError(f"unknown pretrained weights {text!r}; available: {known}, or a file path")
    arch, enum, default = TORCHVISION_WEIGHTS[name]
    member = member or default
    if member not in enum.__members__:
        raise PretrainedWeightsError(
            f"{text!r}: {enum.__name__} has no member {member!r}; available: {', '.join(enum.__members__)}"
        )
    return PretrainedSpec(text=text, weights=enum[member], arch=arch)


def hub_checkpoint_dir() -> Path:
    """torch's download cache, ``<torch.hub.get_dir()>/checkpoints``: where torchvision looks first.

    ``torch.hub.get_dir()`` honours ``torch.hub.set_dir``, then ``$TORCH_HOME/hub``, then
    ``$XDG_CACHE_HOME/torch/hub`` (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_checkpoint_file(weights: WeightsEnum) -> Path:
    """The cache file torchvision reads for ``weights``: the URL's basename in :func:`hub_checkpoint_dir`."""
    return hub_checkpoint_dir() / os.path.basename(urlparse(weights.url).path)


def _missing_from_cache(spec: PretrainedSpec, weights: WeightsEnum) -> PretrainedWeightsMissingError:
    """The error for a torchvision file absent from the cache, with every way to provide it."""
    cached = hub_checkpoint_file(weights)
    message = (
        f"pretrained weights {spec.text} ({spec.description}) are not in torch's hub cache: expected the file "
        f"{cached.name!r} in {cached.parent} (not downloading it). Provide it by copying {cached.name} "
        f"(from {weights.url}, or from ~/.cache/torch/hub/checkpoints on a machine with internet) into "
        f"that folder, or set TORCH_HOME to a folder whose hub/checkpoints holds it, or pass the file's "
        f"path instead of {spec.text!r}."
    )
    return PretrainedWeightsMissingError(message, path=cached, url=weights.url)


def _check_arch_fits(spec: PretrainedSpec, arch: str) -> None:
    """torchvision weights fit exactly one architecture; say which when another is asked for."""
    is_video_arch(arch)  # ValueError for an unknown architecture
    if spec.arch is not None and spec.arch != arch:
        kind = "video (Kinetics-400)" if is_video_arch(spec.arch) else "image (ImageNet)"
        raise PretrainedWeightsError(
            f"{spec.text} are {kind} weights for arch {spec.arch!r}, not {arch!r}; "
            f"use --arch {spec.arch} or pick weights made for {arch!r}"
        )


def check_pretrained(spec: str | PretrainedSpec, *, arch: str, allow_download: bool = False) -> Path:
    """Fail fast, before any expensive work: parse ``spec``, check it fits ``arch`` and find its file.

    Returns the file that will be read (for torchvision weights with ``allow_download`` this may
    not exist yet: it is where the download goes). Raises :class:`PretrainedWeightsError` (and its
    subclass :class:`PretrainedWeightsMissingError` for an absent file). Does not read the file, so
    key compatibility is only checked by :func:`load_pretrained`.
    """
    parsed = parse_pretrained_spec(spec) if isinstance(spec, str) else spec
    _check_arch_fits(parsed, arch)
    if parsed.weights is not None:
        cached = hub_checkpoint_file(parsed.weights)
        if not cached.is_file() and not allow_download:
            raise _missing_from_cache(parsed, parsed.weights)
        return cached
    assert parsed.path is not None
    if not parsed.path.is_file():
        raise PretrainedWeightsMissingError(f"pretrained weights file not found: {parsed.path}", path=parsed.path)
    return parsed.path


# --------------------------------------------------------------------------------------------
# Reading state dicts
# --------------------------------------------------------------------------------------------


def _read_torchvision(spec: PretrainedSpec, weights: WeightsEnum) -> dict[str, Any]:
    """torchvision's own loader (hub cache first; downloads only if the caller allowed it)."""
    try:
        return weights.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as exc:  # a failed download or an unreadable cache file: say which and where
        raise PretrainedWeightsError(
            f"could not load {spec.text} ({spec.description}) from {hub_checkpoint_file(weights)} "
            f"(URL {weights.url}): {exc}"
        ) from exc


def _read_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU, with every failure turned into a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects weights_only refuses
        raise PretrainedWeightsError(f"{path} could not be loaded safely as weights: {exc}") from exc


def _unwrap_payload(payload: Any, *, path: Path, arch: str) -> tuple[Mapping[str, Any], str]:
    """The state dict inside a file, and what the file was.

    A Wardwatch checkpoint must be of ``arch`` (a clearer error than a wall of mismatched keys);
    a ``{"state_dict": ...}`` wrapper, as other training tools write, is unwrapped too.
    """
    if isinstance(payload, Mapping) and "format" in payload:
        if payload["format"] != CHECKPOINT_FORMAT:
            raise PretrainedWeightsError(
                f"{path} has format {payload['format']!r}; expected a Wardwatch checkpoint "
                f"({CHECKPOINT_FORMAT}) or a plain state dict"
            )
        if payload.get("arch") != arch:
            raise PretrainedWeightsError(
                f"{path} is a Wardwatch checkpoint of arch {payload.get('arch')!r}, not {arch!r}; "
                f"use --arch {payload.get('arch')} or another file"
            )
        return payload.get("state_dict"), f"Wardwatch checkpoint ({arch})"
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        return payload["state_dict"], "state dict"
    return payload, "state dict"


def _as_state_dict(payload: Any, *, where: str) -> dict[str, Tensor]:
    """Check that ``payload`` is ``{name: tensor}``; anything else cannot be loaded into a model."""
    if (
        not isinstance(payload, Mapping)
        or not payload
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items())
    ):
        raise PretrainedWeightsError(f"{where} holds no state dict (expected a non-empty {{name: tensor}} mapping)")
    return dict(payload)


def _read_state_dict(spec: PretrainedSpec, *, arch: str, allow_download: bool) -> tuple[dict[str, Tensor], str, Path]:
    """State dict, its description and the file it came from, for a spec already known to fit ``arch``."""
    path = check_pretrained(spec, arch=arch, allow_download=allow_download)
    if spec.weights is not None:
        return _as_state_dict(_read_torchvision(spec, spec.weights), where=str(path)), spec.description, path
    payload, source = _unwrap_payload(_read_file(path), path=path, arch=arch)
    return _as_state_dict(payload, where=str(path)), source, path


# --------------------------------------------------------------------------------------------
# Applying them to a model
# --------------------------------------------------------------------------------------------


def _few(keys: Iterable[str]) -> str:
    """The first few of ``keys``, plus how many more: error messages stay one readable line."""
    items = sorted(keys)
    shown = ", ".join(items[:_KEYS_IN_MESSAGE])
    more = len(items) - _KEYS_IN_MESSAGE
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _backbone(
    model_state: Mapping[str, Tensor], file_state: Mapping[str, Tensor], *, where: str, arch: str
) -> dict[str, Tensor]:
    """The file's non-head tensors, after checking they match the model's exactly.

    Missing ``num_batches_tracked`` buffers are tolerated: they count BatchNorm updates, carry no
    learned weights, and older torchvision files lack them.
    """
    model_keys = {k for k in model_state if not k.startswith(HEAD_PREFIX)}
    file_keys = {k for k in file_state if not k.startswith(HEAD_PREFIX)}
    missing = {k for k in model_keys - file_keys if not k.endswith("num_batches_tracked")}
    unexpected = file_keys - model_keys
    mismatched = {
        f"{k} {tuple(file_state[k].shape)} vs {tuple(model_state[k].shape)}"
        for k in model_keys & file_keys
        if file_state[k].shape != model_state[k].shape
    }
    problems = [
        f"{label} {len(keys)} key(s): {_few(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch (file vs model) in", mismatched),
        )
        if keys
    ]
    if problems:
        raise PretrainedWeightsError(f"{where} does not fit architecture {arch!r}: " + "; ".join(problems))
    return {k: file_state[k] for k in file_keys}


def load_pretrained(
    model: nn.Module, spec: str | PretrainedSpec, *, arch: str, allow_download: bool = False
) -> PretrainedReport:
    """Copy the pretrained backbone named by ``spec`` into ``model`` (built as ``arch``), in place.

    Every tensor except the classifier head (``fc.*``) is loaded and must match the model's keys
    and shapes; the head keeps its fresh initialisation and ``num_classes``. Raises
    :class:`PretrainedWeightsError` for an unknown spec, weights made for another architecture,
    an absent file (:class:`PretrainedWeightsMissingError`; nothing is downloaded unless
    ``allow_download``), a file that is not a state dict, or keys/shapes that do not fit (naming
    a few offending keys).
    """
    parsed = parse_pretrained_spec(spec) if isinstance(spec, str) else spec
    state, source, path = _read_state_dict(parsed, arch=arch, allow_download=allow_download)
    backbone = _backbone(model.state_dict(), state, where=f"{parsed.text} ({path})", arch=arch)
    result = model.load_state_dict(backbone, strict=False)
    if result.unexpected_keys:  # _backbone only keeps the model's own keys; guard against drift
        raise PretrainedWeightsError(f"{parsed.text}: unexpected keys {_few(result.unexpected_keys)}")
    report = PretrainedReport(
        spec=parsed.text,
        source=source,
        path=str(path),
        loaded_keys=len(backbone),
        skipped_head_keys=tuple(sorted(k for k in state if k.startswith(HEAD_PREFIX))),
    )
    logger.info(
        "pretrained %s: loaded %d tensors from %s (%s); new head %s",
        arch,
        report.loaded_keys,
        report.path,
        report.source,
        ", ".join(k for k in model.state_dict() if k.startswith(HEAD_PREFIX)),
    )
    return report


def build_pretrained_model(
    arch: str, *, num_classes: int, pretrained: str | None = None, allow_download: bool = False
) -> nn.Module:
    """:func:`model.nets.build_model`, then :func:`load_pretrained` when ``pretrained`` is given.

    With ``pretrained=None`` this is exactly ``build_model`` (same random draws), so a recipe can
    call it unconditionally. The spec is checked before the model is built, so a missing file
    fails in milliseconds rather than after building a large network.
    """
    if not pretrained:
        return build_model(arch, num_classes=num_classes)
    parsed = parse_pretrained_spec(pretrained)
    check_pretrained(parsed, arch=arch, allow_download=allow_download)
    model = build_model(arch, num_classes=num_classes)
    load_pretrained(model, parsed, arch=arch, allow_download=allow_download)
    return model
