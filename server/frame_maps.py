"""Per-frame explanation maps of an event at low resolution, so the browser can draw them over the playing clip.

What is stored, per event, in ``<media>/events/<id>/maps.npz`` (``numpy.savez_compressed``, no pickles):

* ``times`` float64 ``[F]``: recording seconds of each map frame, ascending, one per distinct sampled frame time;
* ``clip_index`` int64 ``[F]``: the index of the clip (``Clip.index``) whose explanation the frame shows;
* ``grad_cam``, ``guided_backprop``, ``guided_grad_cam`` uint8 ``[F, h, w]``: 0 = nothing, 255 = strongest.

Which clips: those overlapping the event, at most :data:`MAP_CLIPS` (8: the peak clip and its neighbours, so
a long event still answers in one small response), a window centred on the peak clip. Where clips overlap in
time (a stride shorter than a clip), a frame is taken from the clip in which it lies nearest the middle: that
clip saw the most context on both sides of it.

The maps, at the model's input resolution, then resized (bilinear, antialiased) to the recording's aspect
ratio with the long side :data:`MAP_MAX_SIDE` (the canvas scales them up smoothly):

* ``grad_cam``: Grad-CAM (ReLU'd, upsampled to the input), as :func:`model.attribution.explain` returns it;
* ``guided_backprop``: the magnitude over colour channels ``sum_c |g_c|`` of the Guided Backprop gradient
  (ATCON's one-channel map, :func:`model.attribution.reduce_channels`);
* ``guided_grad_cam``: the same magnitude of Guided Grad-CAM, which is the product
  ``grad_cam * guided_backprop`` at the input resolution (Selvaraju et al. 2017: Grad-CAM >= 0 scales each
  pixel's gradient), resized after the product.

Each method is normalised over the whole event (divided by its largest value over all stored frames), so
the frames of one event are comparable; methods are not comparable with each other. All three come from the
fused step (one forward, one backward per batch of clips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.attribution import explain, reduce_channels
from model.inference import frames_to_tensor
from model.nets import default_target_layer
from model.weights import LoadedModel

#: the long side of a stored map: enough for a heat map on a canvas, small enough for one response.
MAP_MAX_SIDE = 32
#: at most this many clips of an event get maps (the peak clip and its neighbours).
MAP_CLIPS = 8
MAPS_FILE = "maps.npz"
MAP_METHODS: tuple[str, ...] = ("grad_cam", "guided_backprop", "guided_grad_cam")
#: clips explained per backward pass (bounds memory with a large model; the tiny one takes all at once).
EXPLAIN_BATCH = 4


@dataclass
class ClipFrames:
    """One clip of the event as the model saw it: uint8 frames ``[T, H, W, 3]`` at the model's size."""

    clip_index: int
    timestamps: list[float]
    frames: np.ndarray


@dataclass
class ClipMaps:
    """Float maps of one clip at the stored size: ``{method: [T, h, w]}``, with the clip's frame times."""

    clip_index: int
    timestamps: list[float]
    maps: dict[str, torch.Tensor]


@dataclass
class EventMaps:
    """The stored maps of one event (see the module docstring for the meaning of each array)."""

    times: np.ndarray
    clip_index: np.ndarray
    maps: dict[str, np.ndarray]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of each map."""
        height, width = self.maps[MAP_METHODS[0]].shape[1:3]
        return int(width), int(height)


def map_size(width: int, height: int, max_side: int = MAP_MAX_SIDE) -> tuple[int, int]:
    """(width, height) with the long side ``max_side`` and the aspect ratio of ``width`` x ``height`` kept."""
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def event_clips(starts: Sequence[float], ends: Sequence[float], start: float, end: float, peak: int,
                cap: int = MAP_CLIPS) -> list[int]:
    """Positions of the clips overlapping ``[start, end]``: at most ``cap``, a window centred on ``peak``."""
    inside = [i for i, (a, b) in enumerate(zip(starts, ends, strict=True)) if a < end and b > start]
    if peak not in inside:
        inside = sorted({*inside, peak})
    where = inside.index(peak)
    first = min(max(0, where - (cap - 1) // 2), max(0, len(inside) - cap))
    return inside[first:first + cap]


def resize_maps(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float maps ``[M, H0, W0]`` -> ``[M, h, w]`` for ``size`` = (w, h): bilinear, antialiased when shrinking."""
    width, height = size
    if tuple(values.shape[1:]) == (height, width):
        return values.float()
    resized = F.interpolate(values[:, None].float(), size=(height, width), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized[:, 0].clamp_min(0)


def reduce_maps(results: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``explain``'s clip maps of one batch -> ``{method: [N, T, h, w]}`` one-channel maps at ``size``."""
    one_channel = {
        "grad_cam": results["grad_cam"],                               # [N,T,H,W]
        "guided_backprop": reduce_channels(results["guided_backprop"]),  # [N,3,T,H,W] -> [N,T,H,W]
        "guided_grad_cam": reduce_channels(results["guided_grad_cam"]),
    }
    out = {}
    for method, values in one_channel.items():
        n, t = values.shape[:2]
        out[method] = resize_maps(values.detach().reshape(n * t, *values.shape[2:]).cpu(), size).reshape(
            n, t, size[1], size[0])
    return out


def explain_clips(loaded: LoadedModel, frames: Sequence[np.ndarray], label_index: int,
                  size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """Maps of clips given as uint8 frames ``[T, H, W, 3]`` at the model's size, ``EXPLAIN_BATCH`` at a time."""
    layer = default_target_layer(loaded.model)
    out: list[dict[str, torch.Tensor]] = []
    for first in range(0, len(frames), EXPLAIN_BATCH):
        batch = np.stack(frames[first:first + EXPLAIN_BATCH])
        inputs = frames_to_tensor(batch, loaded.input_spec).to(loaded.device)
        maps = reduce_maps(explain(loaded.model, inputs, target=label_index, layer=layer, methods=MAP_METHODS),
                           size)
        out += [{method: values[i] for method, values in maps.items()} for i in range(batch.shape[0])]
    return out


def event_maps(loaded: LoadedModel, clips: Sequence[ClipFrames], label_index: int, size: tuple[int, int], *,
               explained: dict[int, dict[str, torch.Tensor]] | None = None) -> EventMaps:
    """The maps of ``clips`` (in time order) for ``label_index`` at ``size``.

    ``explained`` holds ``explain`` results (batch of one) of clips already explained, by clip index (the
    peak clip, explained for its overlays): they are reused, not computed again.
    """
    explained = explained or {}
    todo = [clip for clip in clips if clip.clip_index not in explained]
    fresh = dict(zip((clip.clip_index for clip in todo),
                     explain_clips(loaded, [clip.frames for clip in todo], label_index, size), strict=True))
    for index, results in explained.items():
        fresh[index] = {method: values[0] for method, values in reduce_maps(results, size).items()}
    return assemble([ClipMaps(clip.clip_index, list(clip.timestamps), fresh[clip.clip_index]) for clip in clips])


def select_frames(clips: Sequence[ClipMaps]) -> list[tuple[float, int, int]]:
    """One ``(time, clip position in clips, frame in clip)`` per distinct frame time, ascending in time.

    A time several clips share comes from the clip in which it lies nearest the middle (earlier clip on a tie).
    """
    best: dict[float, tuple[float, int, int]] = {}
    for position, clip in enumerate(clips):
        middle = (len(clip.timestamps) - 1) / 2
        for frame, t in enumerate(clip.timestamps):
            key = round(float(t), 6)
            rank = abs(frame - middle)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, position, frame)
    return [(t, position, frame) for t, (_, position, frame) in sorted(best.items())]


def quantise(values: np.ndarray) -> np.ndarray:
    """Float maps ``[F, h, w]`` >= 0 -> uint8, 255 at the largest value (all 0 when there is no signal)."""
    top = float(values.max()) if values.size else 0.0
    if not math.isfinite(top) or top <= 0:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def assemble(clips: Sequence[ClipMaps]) -> EventMaps:
    """The event's maps: one frame per distinct time, each method normalised over the event."""
    chosen = select_frames(clips)
    maps = {}
    for method in MAP_METHODS:
        stacked = np.stack([clips[p].maps[method][f].numpy() for _, p, f in chosen])
        maps[method] = quantise(stacked)
    return EventMaps(times=np.asarray([t for t, _, _ in chosen], dtype=np.float64),
                     clip_index=np.asarray([clips[p].clip_index for _, p, _ in chosen], dtype=np.int64), maps=maps)


def write_maps(maps: EventMaps, out_dir: Path) -> Path:
    """Write ``maps.npz`` into ``out_dir`` (a temporary name, then renamed: never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MAPS_FILE
    tmp = out_dir / f".{MAPS_FILE}.part"
    with tmp.open("wb") as handle:
        np.savez_compressed(handle, times=maps.times, clip_index=maps.clip_index, **maps.maps)
    tmp.replace(path)
    return path


def read_maps(path: Path) -> EventMaps:
    """Read what :func:`write_maps` wrote (no pickles are ever loaded)."""
    with np.load(path, allow_pickle=False) as data:
        return EventMaps(times=data["times"], clip_index=data["clip_index"],
                         maps={method: data[method] for method in MAP_METHODS})
