"""Training data for fine-tuning and experiments: one container, filled by :mod:`model.training.sources`.

:class:`TrainingData` holds uint8 frames ``[N, T, H, W, 3]`` (in memory, or loaded lazily per
batch through :class:`LazyFrames`), labels ``[N, K]`` and what the evaluation needs (groups for
splits by recording, ground-truth regions for localisation). Images are clips of one frame
(``T = 1``): every network in :mod:`model.nets` that takes images also takes ``[N, 3, 1, H, W]``.

Labels are float32: ``1`` positive, ``0`` negative, ``NaN`` unknown. An unlabelled item is a row
of NaN; a reviewed event rejected by a clinician is ``0`` for its label and may be ``NaN`` for the
others (the supervised loss ignores NaN entries). ``multi_label`` selects the loss and the
prediction rule (sigmoid > 0.5 vs argmax; ATCON.md "Evaluation").

:func:`save_npz` / :func:`load_npz` cache in-memory data as one ``.npz`` file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.files import atomic_path
from model.weights import InputSpec

__all__ = ["BACKGROUND", "FrameStore", "LazyFrames", "TrainingData", "load_npz", "save_npz"]

BACKGROUND = "none"


class LazyFrames:
    """Frames loaded on demand: ``lazy[idx]`` calls the loaders of ``idx`` and stacks the results.

    Each loader returns uint8 ``[T, H, W, 3]``; all must share one shape (``shape`` below). Lets a
    large unlabelled pool (thousands of clips of continuous video) be trained on without holding
    it in memory: only a batch is decoded at a time.
    """

    def __init__(self, loaders: Sequence[Callable[[], np.ndarray]], frame_shape: tuple[int, int, int, int]) -> None:
        self._loaders = list(loaders)
        self.frame_shape = tuple(int(s) for s in frame_shape)

    def __len__(self) -> int:
        return len(self._loaders)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._loaders), *self.frame_shape)

    @property
    def ndim(self) -> int:
        return 5

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __getitem__(self, idx: int | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(idx, int | np.integer):
            return self._load(int(idx))
        return np.stack([self._load(int(i)) for i in np.asarray(idx).reshape(-1)]) if len(idx) else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.frame_shape), dtype=np.uint8)

    def _load(self, i: int) -> np.ndarray:
        frames = np.asarray(self._loaders[i]())
        if frames.dtype != np.uint8 or tuple(frames.shape) != self.frame_shape:
            raise ValueError(
                f"clip {i}: loader returned {frames.dtype} {frames.shape}, expected uint8 {self.frame_shape}"
            )
        return frames

    def subset(self, indices: np.ndarray) -> LazyFrames:
        return LazyFrames([self._loaders[int(i)] for i in indices], self.frame_shape)  # type: ignore[arg-type]


FrameStore = np.ndarray | LazyFrames


@dataclass
class TrainingData:
    """Items for training and evaluation.

    Attributes:
        frames: uint8 ``[N, T, H, W, 3]`` RGB (ndarray or :class:`LazyFrames`); images have T = 1.
        labels: float32 ``[N, K]``: 1 positive, 0 negative, NaN unknown (unlabelled = all NaN).
        class_names: K names, label columns in this order.
        multi_label: sigmoid per class (True) or one class per item, softmax (False).
        groups: int64 ``[N]`` recording / video / source id, for splits that keep a recording in
            one split.
        regions: per item float32 ``[M, 5]`` rows ``(class, x0, y0, x1, y1)`` in input pixels
            (x1/y1 exclusive); ``None`` when the source has no ground-truth regions. The
            ground-truth region of a class is the union of its rectangles.
        source: short description for logs and results.
    """

    frames: FrameStore
    labels: np.ndarray
    class_names: list[str]
    multi_label: bool
    groups: np.ndarray
    regions: list[np.ndarray] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = len(self.frames), len(self.class_names)
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(n, k)
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(n)
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N,T,H,W,3], got {self.frames.dtype} {tuple(self.frames.shape)}")
        if self.regions is not None and len(self.regions) != n:
            raise ValueError(f"regions must have one entry per item ({n}), got {len(self.regions)}")
        if not self.multi_label:
            known = ~np.isnan(self.labels).any(axis=1)
            if known.any() and not np.all(self.labels[known].sum(axis=1) == 1):
                raise ValueError("single-label data needs exactly one positive per labelled item")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, 3)`` of one item."""
        return tuple(int(s) for s in self.frames.shape[1:])  # type: ignore[return-value]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames."""
        t, h, w, _ = self.frame_shape
        return (w, h)

    def labelled_mask(self) -> np.ndarray:
        """bool ``[N]``: items with at least one known label entry."""
        return ~np.isnan(self.labels).all(axis=1)

    def positives(self) -> np.ndarray:
        """Positive items per class, int64 ``[K]`` (NaN counts as not positive)."""
        return (np.nan_to_num(self.labels, nan=0.0) > 0.5).sum(axis=0).astype(np.int64)

    def class_indices(self) -> np.ndarray:
        """int64 ``[N]`` argmax class of each item (single-label data; -1 where unlabelled)."""
        out = np.nan_to_num(self.labels, nan=-1.0).argmax(axis=1)
        out[~self.labelled_mask()] = -1
        return out

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """uint8 frames ``[B, T, H, W, 3]`` of the items ``idx``."""
        return np.asarray(self.frames[np.asarray(idx, dtype=np.int64)])

    def subset(self, indices: Sequence[int] | np.ndarray, *, unlabel: bool = False) -> TrainingData:
        """The items at ``indices``; ``unlabel=True`` replaces their labels by NaN (the pool)."""
        idx = np.asarray(indices, dtype=np.int64)
        frames = self.frames.subset(idx) if isinstance(self.frames, LazyFrames) else self.frames[idx]
        labels = np.full((idx.size, self.num_classes), np.nan, np.float32) if unlabel else self.labels[idx]
        return TrainingData(
            frames=frames,
            labels=labels,
            class_names=list(self.class_names),
            multi_label=self.multi_label,
            groups=self.groups[idx],
            regions=None if self.regions is None else [self.regions[int(i)] for i in idx],
            source=self.source,
            extra=dict(self.extra),
        )

    def input_spec(self, *, frames_per_second: float = 1.0, **kwargs: Any) -> InputSpec:
        """An :class:`InputSpec` matching the frames (size, frame count, label rule)."""
        t = self.frame_shape[0]
        base = dict(frames=t, sample_fps=frames_per_second, size=self.input_size, multi_label=self.multi_label)
        base.update(kwargs)
        return InputSpec(**base)


def save_npz(data: TrainingData, path: str | os.PathLike[str]) -> Path:
    """Write in-memory :class:`TrainingData` to one ``.npz`` atomically (temp file + rename).

    Used to cache generated datasets: concurrent runs may write the same cache, never a torn one.
    """
    if isinstance(data.frames, LazyFrames):
        raise ValueError("only in-memory frames can be saved")
    target = Path(path)
    regions = data.regions if data.regions is not None else []
    offsets = np.cumsum([0] + [len(r) for r in regions]).astype(np.int64)
    flat = np.concatenate(regions).astype(np.float32) if regions else np.zeros((0, 5), np.float32)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(
            tmp,
            frames=data.frames,
            labels=data.labels,
            groups=data.groups,
            class_names=np.asarray(data.class_names),
            multi_label=np.asarray(data.multi_label),
            has_regions=np.asarray(data.regions is not None),
            region_offsets=offsets,
            regions=flat.reshape(-1, 5),
            source=np.asarray(data.source),
        )
    return target


def load_npz(path: str | os.PathLike[str]) -> TrainingData:
    """Inverse of :func:`save_npz` (no pickled objects: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        offsets = z["region_offsets"]
        flat = z["regions"]
        regions = (
            [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)] if bool(z["has_regions"]) else None
        )
        return TrainingData(
            frames=z["frames"],
            labels=z["labels"],
            class_names=[str(c) for c in z["class_names"]],
            multi_label=bool(z["multi_label"]),
            groups=z["groups"],
            regions=regions,
            source=str(z["source"]),
        )
