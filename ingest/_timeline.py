"""Frame timing: presentation timestamps -> (frame index, seconds), sampling, gaps and report counters.

Why one pure object for this: the same decisions must come out identically whether the timestamps come
from decoded frames (the normal path), from demuxed packets without decoding (the resume scan and the
decode-only-what-is-needed path of :mod:`ingest._plan`), or from a live stream. Keeping every
time-dependent decision here, as a function of the timestamp sequence only, is what makes "resume at
clip k" and "skip unneeded frames" give *exactly* the frames of a full decode.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

from ingest.report import IngestReport

log = logging.getLogger(__name__)


class Sampler:
    """Decides which frames to keep so that kept frames are about ``1 / sample_fps`` seconds apart.

    Targets lie on the grid ``k / sample_fps``; a frame is kept when it is the first one within half a
    source frame interval of the next target, and the next target is then the first grid point after
    it. Streaming, O(1) memory, and robust to variable frame rates and gaps (missed targets are not
    made up with duplicate frames).
    """

    def __init__(self, sample_fps: float | None, source_fps: float) -> None:
        self.period = 1.0 / sample_fps if sample_fps else 0.0
        half_interval = 0.5 / source_fps if source_fps > 0 else 0.5 * self.period
        # Slightly under half a frame so a frame exactly between two targets goes to the later one only.
        self.tolerance = max(0.0, half_interval - 1e-6)
        self.next_t = 0.0

    def take(self, t: float) -> bool:
        """True when the frame at ``t`` seconds is kept (advances the state)."""
        if self.period == 0.0:
            return True
        if t < self.next_t - self.tolerance:
            return False
        self.next_t = (math.floor((t + self.tolerance) / self.period + 1e-9) + 1) * self.period
        return True


class Timeline:
    """Turns a sequence of presentation timestamps (in presentation order) into timing decisions.

    For each frame, :meth:`step` returns ``(index, seconds, keep)``: the frame's position in
    presentation order (what decord and ``ffmpeg -vf select`` call frame n), its seconds from the start
    of the stream (``offset`` plus pts relative to ``origin``; a frame counter over the frame rate when a
    frame has no pts), and whether the sampler keeps it. It also records gaps (no frame for more than
    2.5 frame intervals and at least 0.2 s) and the decoded frame count and duration in ``report``.

    ``interval`` is the smallest frame spacing seen so far, starting from the average rate: the average
    alone is wrong for files with gaps (30 frames over 4 s "average" 7.5 fps at 15 fps).
    """

    def __init__(
        self,
        *,
        fps: float,
        time_base: Fraction | None,
        origin: int | None,
        sample_fps: float | None,
        report: IngestReport | None,
        name: str,
        offset: float = 0.0,
    ) -> None:
        self.fps = fps
        self.time_base = time_base
        self.origin = origin
        self.offset = offset
        self.report = report
        self.name = name
        self.sampler = Sampler(sample_fps, fps)
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.count = 0
        self.prev_t: float | None = None
        self.last_pts: int | None = None

    def seconds(self, pts: int | None) -> float:
        """Seconds of a frame with this pts (the frame counter is used when pts is None)."""
        if pts is not None and self.time_base is not None:
            if self.origin is None:
                self.origin = pts
            return self.offset + max(0.0, float((pts - self.origin) * self.time_base))
        if self.fps > 0:
            return self.offset + self.count / self.fps
        return self.offset + float(self.count)

    def step(self, pts: int | None) -> tuple[int, float, bool]:
        """Account for the next frame in presentation order; return ``(index, seconds, keep)``."""
        t = self.seconds(pts)
        index = self.count
        self.count += 1
        self.last_pts = pts
        if self.prev_t is not None:
            delta = t - self.prev_t
            if delta > 1e-4:
                self.interval = min(self.interval, delta) if self.interval > 0 else delta
            if delta > max(2.5 * self.interval, 0.2):
                self.add_gap(self.prev_t, t)
        self.prev_t = t
        if self.report is not None:
            self.report.frames += 1
            self.report.duration = max(self.report.duration, t + self.interval)
        return index, t, self.sampler.take(t)

    def add_gap(self, start: float, end: float) -> None:
        """Record that no frame lies strictly between the frames at ``start`` and ``end`` seconds."""
        log.warning("%s: no frames between %.2f s and %.2f s", self.name, start, end)
        if self.report is not None:
            self.report.gaps.append((round(start, 6), round(end, 6)))

    @property
    def decoded_until(self) -> float:
        """Seconds covered by the frames seen so far (last frame time plus one interval; 0 when none)."""
        return self.prev_t + self.interval if self.prev_t is not None else 0.0
