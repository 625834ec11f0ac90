"""Write a live stream into its archive as the reader delivers it: rolling MPEG-TS segments and their index.

The reader (:func:`ingest.stream.iter_stream_clips`) hands over every demuxed packet and every decoded frame with
the timeline that timed it. H.264 and HEVC packets are stored as they came (remux: no decode, no encode), a
segment starting at a keyframe; other codecs are encoded to H.264 from the decoded frames. A segment's index
line is written once its clock is known (the timeline of its first frame) and closed with its span and size
when the next one starts, the connection ends, or the stream stops; :mod:`ingest.archive` says why.

A failure to write (full disk, a muxer error) never stops the stream being read and scored: the segment is
closed with what it holds, a bounded message goes to the report, and archiving resumes at the next keyframe.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
from av.video.reformatter import VideoReformatter

from ingest._media import frame_rate, rotation_from_frame, rotation_from_metadata
from ingest.archive import (
    FILE_TIME_BASE,
    SEGMENT_SUFFIX,
    ArchiveSpec,
    Segment,
    SegmentClock,
    append_entries,
    read_index,
    reason,
)
from ingest.archive_reader import recover_archive
from ingest.errors import ArchiveError
from ingest.report import IngestReport

log = logging.getLogger(__name__)

__all__ = ["ArchiveBusy", "StreamArchiveWriter", "TimingSource"]

# copyts: store the timestamps given (no 1.4 s mux delay added); flush_packets: each packet reaches the file as
# it is written, so a writer killed mid-segment loses only the packet in flight
_MUX_OPTIONS = {"mpegts_copyts": "1", "flush_packets": "1"}
_MAX_MESSAGES = 10  # archive problems reported per writer; later ones are only logged
_WRITER_LOCK = ".writer.lock"


class ArchiveBusy(ArchiveError):
    """Another writer (a reader of the same stream that has not yet noticed it lost the job) holds the archive."""


class TimingSource(Protocol):
    """What the writer needs of the reader's timeline (``ingest._timeline.Timeline``)."""

    offset: float
    origin: int | None
    time_base: Fraction | None


@dataclass
class _Open:
    """The segment being written."""

    seq: int
    path: Path
    container: av.container.OutputContainer
    stream: av.video.stream.VideoStream
    time_base: Fraction  # source time base
    first_pts: int  # source pts of its first packet (remux: a keyframe) or frame (encode)
    base: int  # source pts stored as 0
    exact: bool  # the clock must come from the frame of first_pts itself (after a timestamp jump)
    clock: SegmentClock | None = None
    entry: Segment | None = None
    frames: int = 0
    min_pts: int | None = None
    max_end: int | None = None  # source pts after its last frame
    last_file_pts: int = -1  # encode: strictly increasing output pts
    encoder: av.video.stream.VideoStream | None = None


class StreamArchiveWriter:
    """Archives one live recording into ``directory`` (its index continues one left by an earlier writer).

    Call :meth:`connect` for each connection, :meth:`packet` for every demuxed packet, :meth:`frame` for every
    decoded frame with the timeline that timed it, :meth:`gap` for each outage, :meth:`disconnect` when the
    connection ends, and :meth:`close` at the end. ``on_segment`` is called (in the caller's thread) with each
    segment once it is closed and indexed: from then on it can be read.

    One writer at a time: it holds an exclusive ``flock`` on the archive for its life (released by the kernel if
    its process dies), waiting up to ``lock_timeout`` seconds for an earlier writer to let go (else
    :class:`ArchiveBusy`). Holding it, it closes what a dead writer left open
    (:func:`ingest.archive_reader.recover_archive`), so its own segments continue after those.
    """

    def __init__(self, directory: str | Path, spec: ArchiveSpec | None = None, *,
                 on_segment: Callable[[Segment], None] | None = None, report: IngestReport | None = None,
                 name: str = "stream", lock_timeout: float = 0.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = _hold_writer_lock(self.directory, lock_timeout)
        try:
            recover_archive(self.directory)
        except BaseException:
            self._release()
            raise
        self.spec = spec or ArchiveSpec()
        self.on_segment = on_segment
        self.report = report
        self.name = name
        index = read_index(self.directory)
        self.next_seq = index.next_seq
        self.archived_until = index.end  # closed segments and outages so far: a later gap starts no earlier
        self.current: _Open | None = None
        self.messages = 0
        self.failures = 0
        self.closed = False
        self.segments_written = 0
        self._reset_connection()

    # -- the reader's calls ---------------------------------------------------------------------------------

    def connect(self, stream: av.video.stream.VideoStream, wall_origin: datetime | None) -> None:
        """A new connection (its codec, clock and frame rate may differ from the last one)."""
        self.disconnect()
        self._reset_connection()
        if self.closed:
            return
        self.input = stream
        self.wall_origin = wall_origin
        self.fps = frame_rate(stream)
        self.rotation = rotation_from_metadata(stream.metadata)
        if stream.time_base is None:
            self._problem("the stream has no time base; it is not archived")
            return
        self.time_base = Fraction(stream.time_base)
        codec = stream.codec_context.name
        self.mode = "remux" if codec in self.spec.remux_codecs else "encode"
        self.codec = codec if self.mode == "remux" else "h264"

    def packet(self, packet: av.Packet) -> None:
        """Store a demuxed packet (remux mode; in encode mode the frames are stored instead)."""
        if self.mode != "remux" or packet.pts is None:
            return
        try:
            self._remux(packet)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)

    def frame(self, frame: av.VideoFrame, timing: TimingSource) -> None:
        """A decoded frame and the timeline that gave it its recording time (after ``timing.step``)."""
        if self.mode is None or frame.pts is None or timing.origin is None or timing.time_base is None:
            return
        if self.rotation is None:
            self.rotation = rotation_from_frame(frame)
        key = (timing.offset, int(timing.origin), Fraction(timing.time_base))
        try:
            if self.mode == "remux":
                self._clock_from(frame, key)
            else:
                self._encode(frame, key)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)

    def gap(self, start: float, end: float) -> None:
        """An outage between two frames the reader received (recording seconds). It starts no earlier than
        what the archive already holds: after a restart the dead reader's archive may reach past its last clip."""
        start = max(start, self.archived_until)
        if end <= start or self.closed:
            return
        try:
            append_entries(self.directory, [{"type": "gap", "start": round(start, 6), "end": round(end, 6)}])
        except OSError as exc:
            self._problem(f"the outage {start:.2f}-{end:.2f} s could not be indexed ({reason(exc)})")
        self.archived_until = max(self.archived_until, end)

    def disconnect(self) -> None:
        """The connection ended: close its segment (readable from now on)."""
        self._close_current()

    def close(self) -> None:
        """The recording ended (stopped, failed, or handed to another reader); the archive is free again."""
        try:
            self.disconnect()
        finally:
            self.closed = True
            self.mode = None
            self._release()

    def _release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # -- remux ------------------------------------------------------------------------------------------------

    def _remux(self, packet: av.Packet) -> None:
        pts = int(packet.pts)
        dts = int(packet.dts) if packet.dts is not None else None
        current = self.current
        jumped = dts is not None and self.last_dts is not None and dts < self.last_dts
        if dts is not None:
            self.last_dts = dts
        if jumped:  # the camera's clock went back: the reader starts a new timeline, so a new segment starts
            self._close_current()
            self.conn_clock = None
            current = None
            self.after_jump = True
        elif current is not None and packet.is_keyframe and \
                (pts - current.first_pts) * current.time_base >= self.spec.segment_seconds:
            self._close_current()
            current = None
        if current is None:
            if not packet.is_keyframe:
                return  # a segment must start at a keyframe to be decodable on its own
            current = self._open(pts, dts if dts is not None else pts, template=self.input)
            current.exact = self.after_jump
            self.after_jump = False
            if self.conn_clock is not None and not current.exact:  # a roll within a known timeline: its clock now
                self._set_clock(current, self.conn_clock)
        out = av.Packet(bytes(packet))
        out.pts = pts - current.base
        out.dts = dts - current.base if dts is not None else None
        if packet.duration:
            out.duration = packet.duration
        out.time_base = current.time_base
        out.is_keyframe = packet.is_keyframe
        out.stream = current.stream
        current.container.mux(out)
        duration = int(packet.duration) if packet.duration else self._interval(current.time_base)
        self._note(current, pts, pts + duration)

    def _clock_from(self, frame: av.VideoFrame, key: tuple[float, int, Fraction]) -> None:
        """Remux: a segment's clock is the timeline of its first frame."""
        pts = int(frame.pts)
        current = self.current
        if current is not None and current.clock is None and \
                (pts == current.first_pts or (not current.exact and pts >= current.first_pts)):
            self._set_clock(current, key)
        elif current is not None and current.clock is not None and \
                (current.clock.offset, current.clock.origin, current.clock.time_base) != key and \
                pts >= current.first_pts:
            # the reader's timeline changed without a timestamp jump the packets showed: end the segment here
            log.warning("%s: archive segment %s ended early: the stream's clock changed", self.name,
                        current.path.name)
            self._close_current()
            self.after_jump = True
        if current is None or current.clock is not None or not current.exact:
            self.conn_clock = key

    # -- encode -------------------------------------------------------------------------------------------------

    def _encode(self, frame: av.VideoFrame, key: tuple[float, int, Fraction]) -> None:
        pts = int(frame.pts)
        current = self.current
        if current is not None and (
            current.clock is None or (current.clock.offset, current.clock.origin, current.clock.time_base) != key
            or (pts - current.first_pts) * current.time_base >= self.spec.segment_seconds
            or pts < current.first_pts
        ):
            self._close_current()
            current = None
        if current is None:
            current = self._open(pts, pts, template=None, size=(frame.width, frame.height))
            self._set_clock(current, key)
        assert current.encoder is not None
        image = self.reformatter.reformat(frame, width=current.encoder.width, height=current.encoder.height,
                                          format="yuv420p")
        file_pts = max(current.last_file_pts + 1, round((pts - current.base) * current.time_base / FILE_TIME_BASE))
        image.pts, image.time_base = file_pts, FILE_TIME_BASE
        current.last_file_pts = file_pts
        for packet in current.encoder.encode(image):
            current.container.mux(packet)
        self._note(current, pts, pts + self._interval(current.time_base))

    # -- segments -------------------------------------------------------------------------------------------------

    def _open(self, first_pts: int, base: int, *, template: av.video.stream.VideoStream | None,
              size: tuple[int, int] | None = None) -> _Open:
        seq = self.next_seq
        self.next_seq += 1
        path = self.directory / f"seg-{seq:08d}{SEGMENT_SUFFIX}"
        container = av.open(str(path), mode="w", format="mpegts", options=dict(_MUX_OPTIONS))
        try:
            encoder = None
            if template is not None:
                stream = container.add_stream_from_template(template)
            else:
                assert size is not None
                rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(25)
                stream = encoder = container.add_stream("libx264", rate=rate)
                width, height = _even_size(*size, self.spec.max_side)
                encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
                encoder.time_base = FILE_TIME_BASE
                encoder.codec_context.time_base = FILE_TIME_BASE
                # zerolatency: no lookahead or B-frames, so what a killed writer leaves holds every frame it was given
                encoder.options = {"crf": str(self.spec.crf), "preset": self.spec.preset, "tune": "zerolatency"}
        except BaseException:
            container.close()
            path.unlink(missing_ok=True)
            raise
        assert self.time_base is not None
        self.current = _Open(seq=seq, path=path, container=container, stream=stream, time_base=self.time_base,
                             first_pts=first_pts, base=base, exact=False, encoder=encoder)
        return self.current

    def _set_clock(self, current: _Open, key: tuple[float, int, Fraction]) -> None:
        """The segment's clock is known: write its index line (from now on a dead writer's segment is found)."""
        offset, origin, time_base = key
        current.clock = SegmentClock(offset=offset, origin=origin, time_base=time_base, base=current.base)
        start = current.clock.seconds_of_source(current.first_pts)
        width, height = (current.encoder.width, current.encoder.height) if current.encoder is not None else \
            (int(self.input.codec_context.width), int(self.input.codec_context.height))
        current.entry = Segment(seq=current.seq, file=current.path.name, clock=current.clock, start=start,
                                start_wall=self._wall(start), fps=self.fps, width=width, height=height,
                                rotation=self.rotation or 0, codec=self.codec, mode=str(self.mode))
        append_entries(self.directory, [current.entry.open_entry()])

    def _note(self, current: _Open, pts: int, end: int) -> None:
        current.frames += 1
        current.min_pts = pts if current.min_pts is None else min(current.min_pts, pts)
        current.max_end = end if current.max_end is None else max(current.max_end, end)

    def _close_current(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        try:
            if current.encoder is not None:
                for packet in current.encoder.encode(None):
                    current.container.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._problem(f"segment {current.path.name}: the encoder's last frames were lost ({reason(exc)})")
        try:
            current.container.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._problem(f"segment {current.path.name} may be incomplete ({reason(exc)})")
        if current.entry is None or current.clock is None or current.frames == 0 or current.max_end is None:
            # never indexed (the connection ended before its first frame was decoded): nothing can read it
            current.path.unlink(missing_ok=True)
            return
        start = current.clock.seconds_of_source(current.min_pts if current.min_pts is not None else current.first_pts)
        end = current.clock.seconds_of_source(current.max_end)
        try:
            size = current.path.stat().st_size
        except OSError:
            size = 0
        segment = replace(current.entry, start=min(start, current.entry.start), end=end, end_wall=self._wall(end),
                          frames=current.frames, bytes=size)
        try:
            append_entries(self.directory, [segment.close_entry()])
        except OSError as exc:
            self._problem(f"segment {current.path.name} could not be indexed ({reason(exc)})")
            return
        self.archived_until = max(self.archived_until, end)
        self.segments_written += 1
        if self.on_segment is not None:
            try:
                self.on_segment(segment)
            except Exception:  # noqa: BLE001 - the listener's failure must not stop the stream being read
                log.exception("%s: archive listener failed on %s", self.name, segment.file)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _reset_connection(self) -> None:
        self.input: av.video.stream.VideoStream | None = None
        self.mode: str | None = None
        self.codec = ""
        self.time_base: Fraction | None = None
        self.fps = 0.0
        self.rotation: int | None = None
        self.wall_origin: datetime | None = None
        self.last_dts: int | None = None
        self.conn_clock: tuple[float, int, Fraction] | None = None
        self.after_jump = False
        self.reformatter = VideoReformatter()

    def _interval(self, time_base: Fraction) -> int:
        """One frame interval in source units (the nominal rate; 1/25 s when it is unknown)."""
        return max(1, round(Fraction(1) / (Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else 25)
                            / time_base))

    def _wall(self, seconds: float) -> str | None:
        return (self.wall_origin + timedelta(seconds=seconds)).isoformat() if self.wall_origin is not None else None

    def _failed(self, exc: Exception) -> None:
        """A write failed: close what the segment holds and go on (the next keyframe starts a new one)."""
        self.failures += 1
        name = self.current.path.name if self.current is not None else "the archive"
        self._problem(f"archiving failed at {name} ({reason(exc)}); the stream is still scored")
        log.debug("%s: archive failure", self.name, exc_info=exc)
        try:
            self._close_current()
        except Exception:  # noqa: BLE001 - already failing: keep reading the stream whatever happens
            log.exception("%s: closing the archive segment failed", self.name)
            self.current = None
        self.conn_clock = None
        self.after_jump = True

    def _problem(self, message: str) -> None:
        self.messages += 1
        log.warning("%s: %s", self.name, message)
        if self.report is not None and self.messages <= _MAX_MESSAGES:
            self.report.errors.append(message)


def _hold_writer_lock(folder: Path, timeout: float):  # type: ignore[no-untyped-def]
    """The open, exclusively locked writer lock file of ``folder``."""
    handle = (folder / _WRITER_LOCK).open("a")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise ArchiveBusy("another reader is still writing this stream's archive") from None
            time.sleep(0.2)


def _even_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
