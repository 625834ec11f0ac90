"""Reviewed clips from the server: database rows adapted to plain :class:`ReviewedClip` records.

The server turns reviewed events (and other clips, as the unlabelled pool) into records with a
frame loader or a video path and frame times; :func:`reviewed_clips` makes them
:class:`~model.training.training_data.TrainingData`, loading frames per batch when lazy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.training.training_data import FrameStore, LazyFrames, TrainingData
from model.weights import InputSpec

__all__ = ["ReviewedClip", "labels_from_review", "reviewed_clips"]


@dataclass(frozen=True)
class ReviewedClip:
    """One clip as the server sees it, adapted from a database row.

    Either ``load`` (a callable returning uint8 ``[T, H, W, 3]`` at the model's input size, or any
    size: frames are resized) or ``video`` + ``times`` (frame timestamps in seconds, read with
    :func:`ingest.decode.read_frames`). ``labels``: per class of the dataset's ``class_names``,
    1 / 0 / NaN (see :func:`labels_from_review`); ``None`` = unlabelled (the unsupervised pool).
    ``group``: recording id (splits keep a recording together). ``regions``: optional
    ``(class, x0, y0, x1, y1)`` rows in input pixels.
    """

    labels: Sequence[float] | None = None
    load: Callable[[], np.ndarray] | None = None
    video: str | None = None
    times: Sequence[float] | None = None
    group: int = 0
    regions: Sequence[tuple[float, float, float, float, float]] = ()

    def __post_init__(self) -> None:
        if (self.load is None) == (self.video is None):
            raise ValueError("a ReviewedClip needs exactly one of load or video (+ times)")
        if self.video is not None and not self.times:
            raise ValueError("a ReviewedClip with a video path needs the frame times")


def labels_from_review(
    class_names: Sequence[str],
    *,
    positives: Sequence[str] = (),
    negatives: Sequence[str] = (),
    others: float = 0.0,
) -> list[float]:
    """Label vector of a reviewed event.

    Confirmed / relabelled events are ``positives=[label]``; rejected ones ``negatives=[label]``.
    ``others`` is the value for every other class: ``0.0`` (default: events rarely co-occur, so a
    reviewed clip is taken as negative for the rest) or ``nan`` (unknown, ignored by the loss).
    """
    index = {name: k for k, name in enumerate(class_names)}
    out = [float(others)] * len(class_names)
    for name in list(positives) + list(negatives):
        if name not in index:
            raise ValueError(f"unknown class {name!r}; classes are {list(class_names)}")
    for name in negatives:
        out[index[name]] = 0.0
    for name in positives:
        out[index[name]] = 1.0
    return out


def _resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` resized to ``size`` = (w, h) (bilinear, antialiased)."""
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def _clip_loader(clip: ReviewedClip, spec: InputSpec) -> Callable[[], np.ndarray]:
    size = tuple(spec.size)

    def load() -> np.ndarray:
        if clip.load is not None:
            frames = np.asarray(clip.load())
        else:
            from ingest.decode import read_frames

            assert clip.video is not None and clip.times is not None
            frames = read_frames(clip.video, list(clip.times), size=size)  # type: ignore[arg-type]
        if frames.ndim == 3:  # a single image
            frames = frames[None]
        return _resized(frames.astype(np.uint8, copy=False), size)  # type: ignore[arg-type]

    return load


def reviewed_clips(
    clips: Sequence[ReviewedClip],
    class_names: Sequence[str],
    spec: InputSpec,
    *,
    lazy: bool = True,
    source: str = "reviewed",
) -> TrainingData:
    """Turn server records into :class:`TrainingData` (frames loaded per batch when ``lazy``).

    Every clip must yield ``spec.frames`` frames; they are resized to ``spec.size``. With
    ``spec.multi_label`` False, a labelled clip needs exactly one positive.
    """
    k = len(class_names)
    w, h = spec.size
    loaders = [_clip_loader(c, spec) for c in clips]
    frames: FrameStore = LazyFrames(loaders, (spec.frames, h, w, 3))
    if not lazy:
        frames = frames[np.arange(len(clips))] if clips else np.zeros((0, spec.frames, h, w, 3), np.uint8)
    labels = np.full((len(clips), k), np.nan, dtype=np.float32)
    for i, c in enumerate(clips):
        if c.labels is not None:
            if len(c.labels) != k:
                raise ValueError(f"clip {i}: {len(c.labels)} labels for {k} classes")
            labels[i] = np.asarray(c.labels, dtype=np.float32)
    regions = [np.asarray(c.regions, dtype=np.float32).reshape(-1, 5) for c in clips]
    return TrainingData(
        frames=frames,
        labels=labels,
        class_names=list(class_names),
        multi_label=spec.multi_label,
        groups=np.asarray([c.group for c in clips], dtype=np.int64),
        regions=regions if any(r.size for r in regions) else None,
        source=source,
    )
