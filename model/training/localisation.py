"""Weakly supervised localisation from Grad-CAM, and the faithfulness of explanation maps.

* **mIoU** (the ATCON / CAM protocol): the Grad-CAM of the predicted class, upsampled to the
  input, clipped above ``mean + 2 std``, min-max normalised, binarised at 0.5; IoU with the union
  of the ground-truth rectangles of that class; averaged over the items where the predicted
  class is a true class (for a comparison, where *both* models predict a true class).
* **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): for every (item, true class with a region), a hit when the map's maximum lies in the
  region; accuracy = hits / trials.
* **Average Drop / Increase in Confidence** (Chattopadhay et al., "Grad-CAM++", WACV 2018, eq.
  19-20; TAME's variant keeps the top 100/50/15 % of the map): with ``Y`` the class probability on
  the input and ``O`` on the input multiplied by the (normalised) map,
  ``AD = 100 * mean(max(0, Y - O) / Y)`` and ``IC = 100 * mean(O > Y)``.

Tensors/arrays in, numbers out; no files. Maps for clips are averaged over time before the
2-D comparison with the regions (regions are per item, not per frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from model.attribution import GradCAM
from model.inference import frames_to_tensor, model_device
from model.training.prediction import predict_probs
from model.weights import InputSpec

__all__ = [
    "LocalisationResult",
    "average_drop_increase",
    "binarise_cam",
    "grad_cam_maps",
    "localisation",
    "localisation_iou",
    "pointing_game",
    "region_mask",
]


def grad_cam_maps(
    model: nn.Module,
    frames: object,
    spec: InputSpec,
    targets: np.ndarray,
    *,
    layer: nn.Module | None = None,
    per_time_step: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM (ReLU, upsampled to the input, time-averaged for clips), float32 ``[N, H, W]``.

    ``targets``: int ``[N]`` class per item. Model in eval mode during the call (restored).
    """
    from model.nets import default_target_layer

    cam = GradCAM(model, layer if layer is not None else default_target_layer(model))
    dev = model_device(model)
    n = len(frames)  # type: ignore[arg-type]
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for i in range(0, n, batch_size):
            idx = np.arange(i, min(i + batch_size, n))
            x = frames_to_tensor(np.asarray(frames[idx]), spec).to(dev)  # type: ignore[index]
            if x.shape[2] == 1:
                x = x[:, :, 0]  # images: [B, 3, H, W]
            m = cam.attribute(x, torch.as_tensor(targets[idx], device=dev), per_time_step=per_time_step)
            if m.dim() == 4:
                m = m.mean(dim=1)
            out.append(m.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        h, w = spec.size[1], spec.size[0]
        return np.zeros((0, h, w), dtype=np.float32)
    return np.concatenate(out)


def region_mask(regions: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: union of the rectangles of class ``k`` in ``regions`` ``[M, 5]``.

    Rows are ``(class, x0, y0, x1, y1)`` in pixels, x1/y1 exclusive; a pixel belongs to a box
    when its centre does.
    """
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    if regions is None or len(regions) == 0:
        return out
    ys = np.arange(h) + 0.5
    xs = np.arange(w) + 0.5
    for row in np.asarray(regions).reshape(-1, 5):
        if int(row[0]) != k:
            continue
        _, x0, y0, x1, y1 = row
        out |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return out


def binarise_cam(cam: np.ndarray) -> np.ndarray:
    """ATCON.md's protocol for one map ``[H, W]``: clip above mean + 2 std, min-max, > 0.5.

    A constant map gives an empty mask.
    """
    m = np.asarray(cam, dtype=np.float64)
    m = np.minimum(m, m.mean() + 2.0 * m.std())
    lo, hi = m.min(), m.max()
    if not hi > lo:
        return np.zeros(m.shape, dtype=bool)
    return (m - lo) / (hi - lo) > 0.5


def localisation_iou(
    cams: np.ndarray, predicted: np.ndarray, labels: np.ndarray, regions: Sequence[np.ndarray]
) -> np.ndarray:
    """Per-item IoU ``[N]`` of the binarised map of the predicted class with its region.

    NaN where the predicted class is not a true class of the item or has no region there.
    ``cams`` ``[N, H, W]`` are the maps *of the predicted class*.
    """
    n = cams.shape[0]
    out = np.full(n, np.nan)
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0)
    for i in range(n):
        k = int(predicted[i])
        if y[i, k] < 0.5:
            continue
        gt = region_mask(regions[i], k, cams.shape[1:])
        if not gt.any():
            continue
        pred = binarise_cam(cams[i])
        union = np.logical_or(pred, gt).sum()
        out[i] = float(np.logical_and(pred, gt).sum() / union) if union else 0.0
    return out


def pointing_game(cams: np.ndarray, classes: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """Per-trial hit (1.0 / 0.0) ``[N]``: is the maximum of ``cams[i]`` inside the region of
    ``classes[i]``? NaN when that class has no region in item i. (Ties: the first maximum.)"""
    n = cams.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        gt = region_mask(regions[i], int(classes[i]), cams.shape[1:])
        if not gt.any():
            continue
        r, c = np.unravel_index(int(np.argmax(cams[i])), cams.shape[1:])
        out[i] = float(gt[r, c])
    return out


@dataclass
class LocalisationResult:
    """Per-item localisation scores of one model on one test set.

    ``iou`` ``[N]`` (NaN where undefined, see :func:`localisation_iou`), ``pointing`` ``[P]`` hits
    over (item, true class) trials, ``predicted`` ``[N]`` top-1 classes.
    """

    iou: np.ndarray
    pointing: np.ndarray
    predicted: np.ndarray

    def summary(self) -> dict[str, float]:
        iou = self.iou[np.isfinite(self.iou)]
        hits = self.pointing[np.isfinite(self.pointing)]
        return {
            "miou": float(iou.mean()) if iou.size else float("nan"),
            "miou_items": int(iou.size),
            "pointing_game": float(hits.mean()) if hits.size else float("nan"),
            "pointing_trials": int(hits.size),
        }


def localisation(
    model: nn.Module,
    frames: object,
    labels: np.ndarray,
    regions: Sequence[np.ndarray],
    spec: InputSpec,
    *,
    probs: np.ndarray | None = None,
    layer: nn.Module | None = None,
    per_time_step: bool = True,
    batch_size: int = 32,
) -> LocalisationResult:
    """mIoU inputs and pointing-game trials of ``model`` on items with ground-truth regions.

    Grad-CAM of the top-1 class for IoU; Grad-CAM of every true class that has a region for the
    pointing game (one batched pass per class).
    """
    if probs is None:
        probs = predict_probs(model, frames, spec, batch_size=batch_size)
    predicted = probs.argmax(axis=1)
    cams = grad_cam_maps(
        model, frames, spec, predicted, layer=layer, per_time_step=per_time_step, batch_size=batch_size
    )
    iou = localisation_iou(cams, predicted, labels, regions)
    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0) > 0.5
    hits: list[np.ndarray] = []
    for k in range(y.shape[1]):
        items = np.flatnonzero(
            y[:, k] & np.array([bool((np.asarray(r)[:, 0] == k).any()) if len(r) else False for r in regions])
        )
        if items.size == 0:
            continue
        sub = _take(frames, items)
        maps = grad_cam_maps(model, sub, spec, np.full(items.size, k), layer=layer, per_time_step=per_time_step)
        hits.append(pointing_game(maps, np.full(items.size, k), [regions[i] for i in items]))
    pointing = np.concatenate(hits) if hits else np.zeros(0)
    return LocalisationResult(iou=iou, pointing=pointing, predicted=predicted)


class _Take:
    """Index view of a frame store restricted to ``items`` (no copy until indexed)."""

    def __init__(self, frames: object, items: np.ndarray) -> None:
        self._frames, self._items = frames, items

    def __len__(self) -> int:
        return int(self._items.size)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._frames[self._items[np.asarray(idx)]])  # type: ignore[index]


def _take(frames: object, items: np.ndarray) -> _Take:
    return _Take(frames, items)


def average_drop_increase(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    multi_label: bool,
    keep_fraction: float = 1.0,
) -> tuple[float, float]:
    """``(Average Drop %, Increase in Confidence %)`` of explanation maps (Grad-CAM++ eq. 19-20).

    Args:
        inputs: ``[N, C, H, W]`` or ``[N, C, T, H, W]`` normalised model inputs.
        maps: ``[N, H, W]`` / ``[N, T, H, W]`` explanation maps (any scale; min-max normalised
            per item here).
        targets: ``int64 [N]`` explained class.
        keep_fraction: 1.0 multiplies the input by the normalised map (Grad-CAM++); below 1 only
            the top ``keep_fraction`` of the map's pixels are kept (TAME's 50 % / 15 %).

    The masked input is ``x * E`` in normalised units, i.e. removed pixels become the dataset
    mean colour rather than black, which avoids scoring an out-of-distribution black image.
    """
    flat = maps.detach().float().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    e = (flat - lo) / (hi - lo).clamp_min(1e-12)
    if keep_fraction < 1.0:
        keep = max(1, int(round(keep_fraction * e.shape[1])))
        thresh = e.topk(keep, dim=1).values[:, -1:]
        e = e * (e >= thresh)
    e = e.view(maps.shape).unsqueeze(1)  # broadcast over colour channels
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits_full, logits_masked = model(inputs), model(inputs * e)
    finally:
        model.train(was_training)

    def prob(logits: Tensor) -> Tensor:
        p = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
        return p.gather(1, targets.view(-1, 1)).squeeze(1)

    y, o = prob(logits_full.float()), prob(logits_masked.float())
    drop = (torch.clamp(y - o, min=0) / y.clamp_min(1e-12)).mean().item() * 100.0
    increase = (o > y).float().mean().item() * 100.0
    return float(drop), float(increase)
