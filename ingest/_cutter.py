"""Cut a stream of sampled frames into fixed-length clips on a stride grid (the clip state machine).

Why its own module: files (:func:`ingest.clips.iter_clips`), resumed files (:mod:`ingest._resume`, which
first runs it on timestamps alone, without pixels) and live streams (:mod:`ingest.stream`) must cut
identically. Its decisions depend only on the frames' times, never on their pixels, so the resume scan
can run it with ``image=None`` placeholders and hand the state to a real decode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """One sampled frame: source frame index, seconds from recording start, uint8 ``[H, W, 3]`` (or None)."""

    index: int
    t: float
    image: np.ndarray | None


class Cutter:
    """Groups samples into clips of ``frames_per_clip`` consecutive samples, starts on a stride grid.

    Clip ``k`` starts at the first sample at or after the next point of the grid ``0, stride, 2*stride, ...``
    (within ``tolerance``). A clip never spans a gap (two samples more than ``gap`` seconds apart): after
    one, the grid resumes at the first grid point after the gap. Only ``frames_per_clip`` samples are
    ever held, even when clips overlap.
    """

    def __init__(self, *, frames_per_clip: int, stride: float, tolerance: float, gap: float) -> None:
        self.n = frames_per_clip
        self.stride = stride
        self.tolerance = tolerance
        self.gap = gap
        self.buffer: deque[Sample] = deque()
        self.grid_k = 0  # the next clip starts at the first sample at or after grid_k * stride - tolerance
        self.index = 0  # index of the next clip
        self.prev_t: float | None = None

    def push(self, sample: Sample) -> tuple[int, list[Sample]] | None:
        """Add the next sample; return ``(clip index, samples)`` when it completes a clip."""
        t = sample.t
        if self.prev_t is None or t - self.prev_t > self.gap:
            self.buffer.clear()  # a clip must not span a gap; resume at the first grid point after it
            self.grid_k = max(self.grid_k, self.first_grid_point(t))
        self.prev_t = t
        if t < self.grid_k * self.stride - self.tolerance:
            return None  # between clips when stride > clip length
        self.buffer.append(sample)
        if len(self.buffer) < self.n:
            return None
        done = (self.index, list(self.buffer))
        self.index += 1
        self.grid_k += 1
        self.buffer.popleft()  # the next clip starts strictly later, even with a tiny stride
        next_start = self.grid_k * self.stride - self.tolerance
        while self.buffer and self.buffer[0].t < next_start:
            self.buffer.popleft()
        return done

    def break_segment(self) -> None:
        """Forget the partial clip: what follows is not continuous with what came before (reconnect)."""
        self.buffer.clear()
        self.prev_t = None

    def first_grid_point(self, t: float) -> int:
        """Smallest k with ``k * stride >= t - tolerance`` (the first clip start at or after ``t``)."""
        k = int(np.ceil((t - self.tolerance) / self.stride - 1e-9))
        return max(k, 0)
