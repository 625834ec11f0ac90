"""The ingest report: what happened while a recording was decoded into clips.

It lives in its own module so that both :mod:`ingest.decode` (which sees corrupt packets, truncation
and timestamp gaps) and :mod:`ingest.clips` (which counts clips) can fill the same object without a
circular import. :mod:`ingest.clips` re-exports it, as the shared contract names it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestReport:
    """Counters and problems of one ingest run, filled in while the caller iterates.

    Attributes:
        clips: number of clips yielded.
        frames: number of *source* frames decoded (not only the sampled ones).
        duration: seconds of video covered by the decoded frames (last frame's time plus one frame
            interval); shorter than the container's stated duration when the file is truncated.
        errors: human-readable problems (corrupt packets skipped, truncation) that did not stop the run.
        gaps: ``(start, end)``: times of the two decoded frames around a stretch where frames are
            missing (more than 2.5 frame intervals, and at least 0.2 s, apart); clips never span a gap.
    """

    clips: int = 0
    frames: int = 0
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
