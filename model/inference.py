"""Clip scoring: uint8 frames in, per-class probabilities out.

The worker loads a model once (:func:`model.weights.load_checkpoint`), then streams clips from
:func:`ingest.clips.iter_clips` through a :class:`ClipScorer`, which batches them for the
network and hands back each clip with its probabilities. :func:`model.events.detect_events`
turns the score sequence into events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.accel import InferenceOptions, autocast, model_to_channels_last, to_channels_last
from model.device import resolve_device
from model.prefetch import prefetch
from model.weights import InputSpec, LoadedModel

if TYPE_CHECKING:  # only for annotations: scoring works on anything shaped like a Clip
    from ingest.clips import Clip

__all__ = [
    "ClipScorer",
    "InferenceOptions",
    "ScoredClips",
    "frames_to_tensor",
    "model_device",
    "normalize_tensor",
    "predict_proba",
    "resolve_device",
]

logger = logging.getLogger(__name__)


def frames_to_tensor(frames: np.ndarray, spec: InputSpec, *, normalize: bool = True) -> torch.Tensor:
    """uint8 RGB clips ``[B, T, H, W, 3]`` -> normalised float32 ``[B, 3, T, H, W]`` (CPU).

    Pixels are scaled to [0, 1] and normalised with ``spec.mean``/``spec.std`` per channel
    (``normalize=False`` stops at [0, 1], e.g. to augment in pixel units first, then call
    :func:`normalize_tensor`).
    Frames whose (H, W) differ from ``spec.size`` (given as (width, height)) are resized
    bilinearly (antialiased) to it, because a model must see frames at the size it was trained
    on (one of the bugs ATCON.md lists is testing at a different size than training).
    """
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips [B,T,H,W,3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float().div_(255.0)
    width, height = spec.size
    b, c, t, h, w = x.shape
    if (h, w) != (height, width):
        flat = x.transpose(1, 2).reshape(b * t, c, h, w)
        flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        x = flat.view(b, t, c, height, width).transpose(1, 2).clamp_(0.0, 1.0)
    return normalize_tensor(x, spec) if normalize else x.contiguous()


def normalize_tensor(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``[B, 3, T, H, W]`` or ``[B, 3, H, W]`` in [0, 1]."""
    shape = (1, 3) + (1,) * (x.dim() - 2)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(shape)
    return ((x - mean) / std).contiguous()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def predict_proba(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    multi_label: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Class probabilities ``[B, K]`` (float32, CPU) for inputs ``[B, 3, T, H, W]`` or ``[B, 3, H, W]``.

    ``multi_label``: sigmoid per class (independent events); otherwise softmax over classes.
    Runs under ``torch.inference_mode()`` on the model's device, in chunks of ``batch_size``
    (default: all at once) to bound memory. The model is put in eval mode for the call (batch
    statistics would make a clip's score depend on its batch-mates) and its previous mode is
    restored afterwards.
    """
    if batch.shape[0] == 0:
        out_features = getattr(getattr(model, "fc", None), "out_features", 0)
        return torch.zeros((0, out_features), dtype=torch.float32)
    device = model_device(model)
    step = batch.shape[0] if not batch_size else max(1, int(batch_size))
    was_training = model.training
    model.eval()
    try:
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for i in range(0, batch.shape[0], step):
                logits = model(batch[i : i + step].to(device, non_blocking=True)).float()
                probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
                outputs.append(probs.cpu())
        return torch.cat(outputs, dim=0)
    finally:
        model.train(was_training)


@dataclass
class ScoredClips:
    """Scores of a whole clip sequence, ready for :func:`model.events.detect_events`.

    ``starts``/``ends`` float64 ``[N]`` seconds from recording start; ``scores`` float32
    ``[N, K]``; ``indices`` int64 ``[N]`` the clips' own ``index`` values.
    """

    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    indices: np.ndarray


class ClipScorer:
    """Scores a stream of clips in batches with a loaded model.

    Memory stays bounded by ``batch_size`` clips times the prefetch depth: the input iterable (e.g.
    ``iter_clips``) is consumed lazily, and each clip is yielded back with its probabilities as soon as
    its batch has been scored. With ``options.prefetch_batches`` > 0 (the default) a decode thread pulls
    clips from the iterable and prepares their input tensors (:meth:`prepare`) while the model scores
    the previous batch (:meth:`infer`); see :class:`~model.accel.InferenceOptions` for precision,
    memory format and pinned memory. ``options.channels_last`` converts the model's weights in place
    (a layout change only: every user of the model gets the same results).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, options: InferenceOptions | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.loaded = loaded
        self.batch_size = int(batch_size)
        self.device = model_device(loaded.model)
        self.options = (options or InferenceOptions()).resolve(self.device)
        loaded.model.eval()
        if self.options.channels_last:
            model_to_channels_last(loaded.model)

    @property
    def class_names(self) -> list[str]:
        return self.loaded.class_names

    def prepare(self, batch: list[Clip]) -> torch.Tensor:
        """CPU side of a batch (runs in the decode thread): stacked, normalised, laid out, pinned."""
        frames = np.stack([clip.frames for clip in batch])
        tensor = frames_to_tensor(frames, self.loaded.input_spec)
        if self.options.channels_last:
            tensor = to_channels_last(tensor)
        if self.options.pin_memory:
            tensor = tensor.pin_memory()
        return tensor

    def infer(self, inputs: torch.Tensor) -> np.ndarray:
        """Probabilities float32 ``[B, K]`` of a prepared batch: the forward pass alone (the public hook
        :class:`server.observability.scoring.ObservedScorer` times)."""
        x = inputs.to(self.device, non_blocking=self.options.pin_memory)
        with torch.inference_mode(), autocast(self.device, self.options.autocast_dtype):
            logits = self.loaded.model(x)
        logits = logits.float()
        probs = torch.sigmoid(logits) if self.loaded.input_spec.multi_label else torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    def _batches(self, clips: Iterable[Clip]) -> Iterator[tuple[list[Clip], torch.Tensor]]:
        batch: list[Clip] = []
        for clip in clips:
            batch.append(clip)
            if len(batch) == self.batch_size:
                yield batch, self.prepare(batch)
                batch = []
        if batch:
            yield batch, self.prepare(batch)

    def score(self, clips: Iterable[Clip]) -> Iterator[tuple[Clip, np.ndarray]]:
        """Yield ``(clip, probs)`` for every clip, in input order; ``probs`` float32 ``[K]``.

        An error raised by ``clips`` (e.g. a decode error) comes out of here unchanged; closing this
        generator early stops the decode thread first.
        """
        batches = prefetch(self._batches(clips), self.options.prefetch_batches)
        try:
            for batch, inputs in batches:
                yield from zip(batch, self.infer(inputs), strict=True)
        finally:
            batches.close()

    __call__ = score

    def score_all(self, clips: Iterable[Clip]) -> ScoredClips:
        """Score every clip and collect times and scores (frames are not kept)."""
        starts: list[float] = []
        ends: list[float] = []
        indices: list[int] = []
        rows: list[np.ndarray] = []
        for clip, probs in self.score(clips):
            starts.append(float(clip.start))
            ends.append(float(clip.end))
            indices.append(int(clip.index))
            rows.append(probs)
        k = self.loaded.num_classes
        return ScoredClips(
            starts=np.asarray(starts, dtype=np.float64),
            ends=np.asarray(ends, dtype=np.float64),
            scores=np.stack(rows).astype(np.float32) if rows else np.zeros((0, k), dtype=np.float32),
            indices=np.asarray(indices, dtype=np.int64),
        )
