"""Sampled frames of one opened video stream: the engine behind iter_frames, iter_clips and resume.

Why a class: the full decode, the decode-only-what-is-needed path and the resumed decode (which replays
frames already accounted for by the resume scan) share one :class:`ingest._timeline.Timeline`, one error
log and one rotation, and must make the same decisions; each is a method over the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest._decoding import ErrorLog, decode, decoded_frames, demux
from ingest._media import frame_rate, frame_to_rgb, rotation_from_frame, rotation_from_metadata
from ingest._plan import PacketPlanner, avcc_length_size, can_plan
from ingest._timeline import Timeline
from ingest.report import IngestReport

log = logging.getLogger(__name__)

Kept = tuple[int, float, av.VideoFrame]


def configure_threads(stream: av.video.stream.VideoStream, threads: int | None) -> None:
    """Let FFmpeg decode with ``threads`` threads (None or 0: one per core), frame and slice threading."""
    stream.thread_type = "AUTO"
    if threads is not None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        stream.codec_context.thread_count = threads


class SampledReader:
    """Decodes one video stream and yields the frames the sampler keeps, with index and seconds."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        *,
        sample_fps: float | None,
        report: IngestReport | None,
        name: str,
    ) -> None:
        self.container = container
        self.stream = stream
        self.name = name
        self.report = report
        self.errors = ErrorLog(name, report)
        self.time_base = Fraction(stream.time_base) if stream.time_base is not None else None
        self.timeline = Timeline(
            fps=frame_rate(stream),
            time_base=self.time_base,
            origin=stream.start_time,
            sample_fps=sample_fps,
            report=report,
            name=name,
        )
        self.rotation = rotation_from_metadata(stream.metadata)
        self.reformatter = VideoReformatter()

    def to_rgb(self, frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        """Upright uint8 ``[H, W, 3]`` RGB of ``frame`` scaled to ``size`` (width, height) after rotation."""
        if self.rotation is None:
            self.rotation = rotation_from_frame(frame)
        return frame_to_rgb(frame, size, self.rotation, self.reformatter)

    def kept(self, *, skip_unneeded: bool = False) -> Iterator[Kept]:
        """Kept frames from the current position to the end of the stream.

        ``skip_unneeded`` plans H.264 packets so that frames nobody needs are never decoded
        (:mod:`ingest._plan`); for other codecs, or packets without timestamps, it decodes everything.
        """
        if skip_unneeded:
            packets = demux(self.container, self.stream, self.errors)
            first = next(packets, None)
            if can_plan(self.stream, first):
                assert first is not None
                yield from self._planned(_chain(first, packets))
                return
            log.info("%s: cannot plan packets (%s); decoding every frame", self.name, self.stream.codec_context.name)
            frames = decode(_chain(first, packets), self.stream, self.errors) if first is not None else iter(())
        else:
            frames = decoded_frames(self.container, self.stream, self.errors)
        yield from self.follow(frames)

    def follow(
        self,
        frames: Iterator[av.VideoFrame],
        *,
        replay_until: int | None = None,
        replay: Callable[[av.VideoFrame], None] | None = None,
    ) -> Iterator[Kept]:
        """Run decoded frames through the timeline, yielding kept ones.

        Frames with ``pts <= replay_until`` were already accounted for (by the resume scan) and are only
        handed to ``replay``; the timeline continues after them.
        """
        for frame in frames:
            if replay_until is not None and frame.pts is not None and frame.pts <= replay_until:
                if replay is not None:
                    replay(frame)
                continue
            index, t, keep = self.timeline.step(frame.pts)
            if keep:
                yield index, t, frame

    def _planned(self, packets: Iterator[av.Packet]) -> Iterator[Kept]:
        planner = PacketPlanner(self.timeline, avcc_length_size(self.stream.codec_context.extradata))
        decisions: dict[int, tuple[int, float, bool]] = {}

        def needed() -> Iterator[av.Packet]:
            for item in planner.plan(packets):
                if not item.needed:
                    continue
                if item.frame is not None and item.packet.pts is not None:
                    decisions[item.packet.pts] = item.frame
                yield item.packet

        for frame in decode(needed(), self.stream, self.errors):
            decision = decisions.pop(frame.pts, None) if frame.pts is not None else None
            if decision is not None and decision[2]:
                yield decision[0], decision[1], frame

    def finish(self) -> None:
        """Report truncation (fewer seconds decoded than the stream promised) and summarise errors."""
        stream = self.stream
        if stream.duration is not None and self.time_base is not None and stream.duration > 0:
            stated = float(stream.duration * self.time_base)
            fps = self.timeline.fps
            slack = max(1.0, 3.0 / fps) if fps > 0 else 1.0
            decoded = self.timeline.decoded_until
            if decoded < stated - slack:
                self.errors.add(f"recording truncated: decoded {decoded:.2f} s of {stated:.2f} s")
        self.errors.finish()


def _chain(first: av.Packet | None, rest: Iterator[av.Packet]) -> Iterator[av.Packet]:
    if first is not None:
        yield first
    yield from rest
