"""Cut a recording into fixed-length clips of sampled frames, the unit the classifier scores.

Why streaming with a ring buffer: recordings are hours long; a clip of ``frames_per_clip`` frames at
model size is all that needs to be in memory, even when consecutive clips overlap
(``stride_seconds < clip_seconds``). Clip times are seconds from the recording start and, when the
recording's wall-clock start is known, UTC datetimes -- the review UI and FHIR export need both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from ingest import _resume
from ingest._cutter import Cutter, Sample
from ingest._media import open_input, video_stream
from ingest._reader import Kept, SampledReader, configure_threads
from ingest.decode import check_unchanged, file_identity
from ingest.probe import VideoInfo, probe
from ingest.report import IngestReport

log = logging.getLogger(__name__)

__all__ = ["Clip", "ClipSpec", "IngestReport", "iter_clips"]


@dataclass(frozen=True)
class ClipSpec:
    """How to cut clips.

    Attributes:
        clip_seconds: nominal clip length in seconds.
        stride_seconds: seconds between the starts of consecutive clips (< clip_seconds: overlap).
        sample_fps: frames per second sampled from the source (by presentation time).
        size: (width, height) of the frames handed to the model.
    """

    clip_seconds: float = 2.0
    stride_seconds: float = 2.0
    sample_fps: float = 8.0
    size: tuple[int, int] = (112, 112)

    def __post_init__(self) -> None:
        if not self.clip_seconds > 0 or not self.stride_seconds > 0 or not self.sample_fps > 0:
            raise ValueError("clip_seconds, stride_seconds and sample_fps must be positive")
        if self.frames_per_clip < 1:
            raise ValueError("clip_seconds * sample_fps must round to at least one frame")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"size must be a positive (width, height), got {self.size!r}")

    @property
    def frames_per_clip(self) -> int:
        """Frames per clip: ``round(clip_seconds * sample_fps)``."""
        return round(self.clip_seconds * self.sample_fps)


@dataclass
class Clip:
    """One clip of consecutive sampled frames.

    Attributes:
        index: 0-based, consecutive over the clips yielded from one recording.
        start: seconds from recording start of the first frame.
        end: ``start`` plus the time the frames cover (last frame time + one sample interval).
        start_wall, end_wall: UTC wall clock, when ``started_at`` was given to :func:`iter_clips`.
        frames: uint8 ``[T, H, W, 3]`` RGB, ``T == spec.frames_per_clip``, ``(W, H) == spec.size``.
        timestamps: float64 ``[T]`` seconds from recording start of each frame.
        frame_indices: int64 ``[T]`` source frame index of each frame.
    """

    index: int
    start: float
    end: float
    start_wall: datetime | None
    end_wall: datetime | None
    frames: np.ndarray
    timestamps: np.ndarray
    frame_indices: np.ndarray


def iter_clips(
    path: str | os.PathLike[str],
    spec: ClipSpec,
    *,
    started_at: datetime | None = None,
    report: IngestReport | None = None,
    start_index: int = 0,
    threads: int | None = None,
    skip_unneeded: bool = False,
    info: VideoInfo | None = None,
) -> Iterator[Clip]:
    """Stream the clips of a recording with bounded memory.

    Clip ``k`` starts at the first sampled frame at or after the next point of the stride grid
    (``0, stride, 2*stride, ...``) and holds ``spec.frames_per_clip`` consecutive sampled frames.
    A trailing partial clip is *dropped* (padding would invent frames the model never saw).
    A clip never spans a gap in the recording: after a gap the grid resumes at the first grid point
    after the gap. ``started_at`` (naive datetimes are taken as UTC) gives wall-clock times; it is
    deliberately not guessed from the container's ``creation_time``, which many encoders set to the
    time of encoding -- pass ``probe(path).creation_time`` explicitly if you trust it.

    Args:
        start_index: resume after an interrupted run that committed clips ``0 .. start_index - 1``:
            yields clips ``start_index, start_index + 1, ...`` with exactly the indices, times, frame
            indices and pixels of a full run, without decoding the part before (a packet-only scan,
            then a seek to the keyframe before the first frame needed; see :mod:`ingest._resume`).
            The report then describes the whole recording as a full run would (``clips`` counts all
            clips, ``frames``/``duration``/``gaps`` include the scanned part), so it can replace the first
            run's -- except ``errors``, which cover only the decoded part (keep the first run's too).
        threads: decoder threads (None: one per core).
        skip_unneeded: decode only frames that are kept or referenced by kept ones (see
            :func:`ingest.decode.iter_frames`); same clips on intact files. Ignored while resuming.
        info: ``probe(path)``, when the caller has already probed the file (saves a second probe,
            ~0.1 s at 720p); None probes here.

    Raises:
        InvalidVideoError: the file cannot be opened or no frame decodes. Problems after that
            (corrupt packets, truncation) are appended to ``report.errors`` instead.
    """
    if start_index < 0:
        raise ValueError(f"start_index must be >= 0, got {start_index}")
    report = report if report is not None else IngestReport()
    info = info if info is not None else probe(path)  # refuse bad files before decoding anything
    if started_at is not None and started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    run = _Run(Path(path), spec, info.fps, started_at, report, threads)
    saved = replace(report, errors=list(report.errors), gaps=list(report.gaps))
    try:
        yield from run.clips(start_index, scan=start_index > 0, skip_unneeded=skip_unneeded)
    except _resume.ResumeUnsupported as exc:  # raised before any clip was yielded
        log.info("%s; resuming by decoding from the start", exc)
        _restore(report, saved)
        yield from run.clips(start_index, scan=False, skip_unneeded=False)
    log.info(
        "%s: %d clips from %d frames (%.1f s), %d errors, %d gaps",
        info.path,
        report.clips,
        report.frames,
        report.duration,
        len(report.errors),
        len(report.gaps),
    )


class _Run:
    """One pass over a file: open, position (from the start, or by the resume scan), cut, report."""

    def __init__(
        self,
        path: Path,
        spec: ClipSpec,
        source_fps: float,
        started_at: datetime | None,
        report: IngestReport,
        threads: int | None,
    ) -> None:
        self.path = path
        self.spec = spec
        self.source_fps = source_fps
        self.started_at = started_at
        self.report = report
        self.threads = threads
        self.interval = 1.0 / spec.sample_fps
        if source_fps > 0:
            self.interval = max(self.interval, 1.0 / source_fps)  # sampling faster than the source keeps all

    def clips(self, start_index: int, *, scan: bool, skip_unneeded: bool) -> Iterator[Clip]:
        """Clips ``start_index, ...``; with ``scan`` the part before is only scanned (may raise ResumeUnsupported)."""
        with open_input(self.path) as container:
            before = file_identity(self.path)
            stream = video_stream(container, self.path.name)
            configure_threads(stream, self.threads)
            reader = SampledReader(
                container, stream, sample_fps=self.spec.sample_fps, report=self.report, name=self.path.name
            )
            cutter = cutter_for(self.spec, self.source_fps, self.interval)
            kept = self._kept(reader, cutter, start_index if scan else 0, skip_unneeded)
            for index, t, frame in kept:
                done = cutter.push(Sample(index, t, reader.to_rgb(frame, self.spec.size)))
                if done is not None and done[0] >= start_index:
                    yield build_clip(done[0], done[1], self.interval, self.started_at)
                    self.report.clips = done[0] + 1
            self.report.clips = max(self.report.clips, cutter.index)
            check_unchanged(self.path, before, reader)
            reader.finish()

    def _kept(self, reader: SampledReader, cutter: Cutter, start_index: int, skip_unneeded: bool) -> Iterator[Kept]:
        if start_index == 0:
            return reader.kept(skip_unneeded=skip_unneeded)
        point = _resume.scan(reader, cutter, start_index)
        if not point.reached:
            return iter(())
        return _resume.resumed_frames(reader, cutter, point, self.spec.size)


def _restore(report: IngestReport, saved: IngestReport) -> None:
    for f in fields(IngestReport):
        setattr(report, f.name, getattr(saved, f.name))


def cutter_for(spec: ClipSpec, source_fps: float, interval: float) -> Cutter:
    """The clip state machine for ``spec``: grid tolerance and gap threshold from the sample interval."""
    # Slack when matching frame times to the stride grid: just under half a sample interval, so a frame
    # exactly between two grid points goes to the later one (as in decode's sampler).
    tolerance = 0.5 * interval - 1e-6
    gap = 1.9 * interval + (1.0 / source_fps if source_fps > 0 else 0.0)
    return Cutter(frames_per_clip=spec.frames_per_clip, stride=spec.stride_seconds, tolerance=tolerance, gap=gap)


def build_clip(index: int, samples: list[Sample], interval: float, started_at: datetime | None) -> Clip:
    """A :class:`Clip` from the cutter's samples; ``end`` is the last sample time plus one sample interval."""
    timestamps = np.array([s.t for s in samples], dtype=np.float64)
    start = float(timestamps[0])
    end = float(timestamps[-1]) + interval
    return Clip(
        index=index,
        start=start,
        end=end,
        start_wall=started_at + timedelta(seconds=start) if started_at is not None else None,
        end_wall=started_at + timedelta(seconds=end) if started_at is not None else None,
        frames=np.stack([s.image for s in samples if s.image is not None]),
        timestamps=timestamps,
        frame_indices=np.array([s.index for s in samples], dtype=np.int64),
    )
