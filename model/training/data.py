"""In-memory labelled clip datasets and mini-batch iteration.

Clips are kept as uint8 frames (4x smaller than float) and converted to normalised tensors one
batch at a time (:func:`model.inference.frames_to_tensor`), so a few thousand demo clips fit
comfortably in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClipDataset", "iter_batches"]


@dataclass
class ClipDataset:
    """Labelled clips.

    ``frames``: uint8 ``[N, T, H, W, 3]`` RGB at the model's input size.
    ``labels``: float32 ``[N, K]`` multi-hot, columns in ``class_names`` order.
    ``starts``/``ends``: float64 ``[N]`` clip times in seconds from the video's start.
    ``video_ids``: int64 ``[N]`` which video a clip came from (for splits by recording).
    ``boxes``: float32 ``[N, K, 4]`` ground-truth region per class as (x0, y0, x1, y1) in input
    pixels (the union over the clip's frames), NaN where the class is absent; used for
    weakly supervised localisation metrics (Grad-CAM IoU, pointing game).
    """

    frames: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    video_ids: np.ndarray
    boxes: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        n = self.frames.shape[0]
        k = len(self.class_names)
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N,T,H,W,3], got {self.frames.dtype} {self.frames.shape}")
        if self.labels.shape != (n, k):
            raise ValueError(f"labels must be [{n},{k}], got {self.labels.shape}")
        if self.boxes.shape != (n, k, 4):
            raise ValueError(f"boxes must be [{n},{k},4], got {self.boxes.shape}")
        for name in ("starts", "ends", "video_ids"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be [{n}], got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def positives(self) -> np.ndarray:
        """Positive clips per class, int64 ``[K]``."""
        return (self.labels > 0.5).sum(axis=0).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClipDataset:
        """The clips at ``indices`` (a copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ClipDataset(
            frames=self.frames[idx],
            labels=self.labels[idx],
            starts=self.starts[idx],
            ends=self.ends[idx],
            video_ids=self.video_ids[idx],
            boxes=self.boxes[idx],
            class_names=list(self.class_names),
        )

    @staticmethod
    def concatenate(parts: Sequence[ClipDataset]) -> ClipDataset:
        """Join datasets with the same class names and clip shape."""
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise ValueError("datasets have different class names")
        return ClipDataset(
            frames=np.concatenate([p.frames for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            starts=np.concatenate([p.starts for p in parts]),
            ends=np.concatenate([p.ends for p in parts]),
            video_ids=np.concatenate([p.video_ids for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            class_names=list(names),
        )


def iter_batches(
    n: int, batch_size: int, *, shuffle: bool = False, rng: np.random.Generator | None = None
) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(n)`` in chunks of ``batch_size`` (last one may be short)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = (rng or np.random.default_rng()).permutation(n) if shuffle else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]
