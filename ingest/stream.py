"""Live streams (rtsp, rtmp, http(s), udp, tcp): clips as they complete, reconnecting when the stream drops.

Why a separate reader from :func:`ingest.clips.iter_clips`: a live stream has no file to probe, seek or
resume, its timestamps restart whenever the camera or the relay restarts, and it never "ends" -- a closed
connection is an outage to ride out, not the end of the recording. Times are therefore *recording*
seconds anchored on the wall clock: 0 is ``started_at`` (or the first connection), each connection's
frames are placed at (connection time - start) + (pts - first pts), so clip times, gaps and wall-clock
times stay consistent across reconnects. Clip indices continue across reconnects; each outage is one
``(last frame before, first frame after)`` entry in ``report.gaps``; no clip spans an outage.

The cutting itself (sampling, stride grid, clip length) is the one files use (:mod:`ingest._cutter`).
An optional :class:`ingest.archive_writer.StreamArchiveWriter` receives every packet, frame, connection and outage,
so the stream is kept on disk as it is read (:mod:`ingest.archive`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from types import MappingProxyType
from urllib.parse import urlsplit

import av
from av.video.reformatter import VideoReformatter

from ingest._cutter import Sample
from ingest._decoding import ErrorLog, decode
from ingest._media import frame_rate, frame_to_rgb, rotation_from_frame, rotation_from_metadata, video_stream
from ingest._timeline import Timeline
from ingest.archive_writer import StreamArchiveWriter
from ingest.clips import Clip, ClipSpec, build_clip, cutter_for
from ingest.destinations import DestinationPolicy
from ingest.errors import DestinationUnresolved, InvalidVideoError, StreamError
from ingest.report import IngestReport
from ingest.stream_urls import ALLOWED_SCHEMES, redact_url, scrub, validate_stream_url

log = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_SCHEMES", "DEFAULT_FORMATS", "ReconnectPolicy", "StreamResume", "StreamSpec", "iter_stream_clips",
    "redact_url", "scrub", "validate_stream_url",
]

# Protocols FFmpeg may open *underneath* the URL (an HLS playlist over http may name its segments with
# any URL, including file:// -- a classic way to read server files through a "stream").
_PROTOCOL_WHITELIST = "tcp,udp,rtp,http,https,tls,rtmp,rtmps,rtmpt,crypto,httpproxy"
# Demuxers a stream may be read with (FFmpeg's ``format_whitelist``). Left out on purpose: those that open more
# URLs named *inside* the stream -- HLS and DASH playlists, ffconcat scripts, SDP files -- because those URLs
# would reach hosts the destination policy never saw.
DEFAULT_FORMATS: tuple[str, ...] = ("rtsp", "mpegts", "flv", "live_flv", "mjpeg", "mpjpeg", "h264", "hevc",
                                    "matroska", "mov")
# At most this many "stream dropped" messages in report.errors; later outages only add gaps.
_MAX_DROP_MESSAGES = 20


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff between connection attempts.

    Attributes:
        initial_delay: seconds before the first retry after a drop or a failed attempt.
        max_delay: cap on the delay, in seconds.
        max_attempts: consecutive failed attempts after which :class:`StreamError` is raised; None retries
            until ``stop`` is set. A connection that delivered frames resets the count.
        multiplier: factor between consecutive delays.
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_attempts: int | None = None
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < self.initial_delay or self.multiplier < 1:
            raise ValueError("need 0 <= initial_delay <= max_delay and multiplier >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be None or at least 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))


@dataclass(frozen=True)
class StreamResume:
    """Where an earlier reading of the same recording stopped (its reader died), so this one continues it.

    Attributes:
        after: recording seconds of the end of the last clip kept; the outage from there to the first new
            frame is recorded as a gap, like any reconnect.
        next_clip: index of the next clip (clip indices continue).
        next_frame: index of the next frame (frame indices continue).
    """

    after: float
    next_clip: int
    next_frame: int


@dataclass(frozen=True)
class StreamSpec:
    """How to open a live stream.

    Attributes:
        url: ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://`` or ``tcp://`` URL (credentials allowed;
            they never appear in messages or logs).
        open_timeout: seconds to wait for the connection and the stream header.
        read_timeout: seconds without data after which the connection counts as dropped. Also bounds how
            long ``stop`` can take to be noticed while the stream is stalled.
        rtsp_transport: ``"tcp"`` (default: survives NAT and packet loss) or ``"udp"``.
        options: extra FFmpeg demuxer/protocol options (e.g. ``{"probesize": "500000"}``), applied last.
        max_pixels: refuse streams whose pictures exceed this many pixels (as :func:`ingest.probe.probe`).
        formats: the demuxers the stream may be read with (:data:`DEFAULT_FORMATS`); None: any.
        follow_redirects: let http(s) follow redirects. Off by default: the redirect's target was never
            checked by the destination policy.
    """

    url: str
    open_timeout: float = 10.0
    read_timeout: float = 10.0
    rtsp_transport: str = "tcp"
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_pixels: int = 8192 * 4320
    formats: tuple[str, ...] | None = DEFAULT_FORMATS
    follow_redirects: bool = False

    def ffmpeg_options(self) -> dict[str, str]:
        """Container/protocol options for :func:`av.open` (timeouts in microseconds, as FFmpeg wants)."""
        scheme = urlsplit(self.url).scheme.lower()
        micros = str(int(self.read_timeout * 1_000_000))
        opts = {"protocol_whitelist": _PROTOCOL_WHITELIST}
        if self.formats is not None:
            opts["format_whitelist"] = ",".join(self.formats)
        if scheme in ("rtsp", "rtsps"):
            opts.update(rtsp_transport=self.rtsp_transport, timeout=micros)
        else:
            opts["rw_timeout"] = micros
            if scheme in ("tcp", "udp", "http", "https"):
                opts["timeout"] = micros
            if scheme in ("http", "https") and not self.follow_redirects:
                opts["max_redirects"] = "0"
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts


def iter_stream_clips(
    source: str | StreamSpec,
    spec: ClipSpec,
    *,
    started_at: datetime | None = None,
    stop: threading.Event | None = None,
    reconnect: ReconnectPolicy | None = None,
    report: IngestReport | None = None,
    destinations: DestinationPolicy | None = None,
    resume: StreamResume | None = None,
    archive: StreamArchiveWriter | None = None,
) -> Iterator[Clip]:
    """Yield clips of a live stream as they complete, until ``stop`` is set.

    Args:
        source: URL or :class:`StreamSpec`.
        spec: how to cut clips (the same as for files).
        started_at: recording start (UTC; naive is taken as UTC) = recording second 0. Default: the time
            of the first successful connection.
        stop: set it (from any thread) to end the iteration; noticed at the next frame, during a backoff
            wait at once, and while a stream is stalled within ``read_timeout``.
        reconnect: backoff policy (default :class:`ReconnectPolicy()`: retry forever, 1 s to 30 s).
        report: receives frames, duration, gaps (outages and lost frames, in recording seconds) and errors.
        destinations: checked before *every* connection attempt, the first and each reconnect, so a host
            name re-pointed at a refused address is caught at the next connection (DNS rebinding). A refused
            destination ends the iteration at once; a name that does not resolve is one failed attempt.
        resume: continue a recording an earlier reader left (needs ``started_at``, the same recording second 0).
        archive: receives every packet and frame as it is read, each connection and each outage, so the stream
            is stored on disk as it is read (:mod:`ingest.archive`). The caller closes it after the iteration.

    Raises:
        InvalidVideoError: bad URL, or the stream is not acceptable video (no video stream, absurd size).
        DestinationRefused: ``destinations`` refused the host or one of its addresses.
        StreamError: ``reconnect.max_attempts`` consecutive attempts failed.
    """
    stream_spec = source if isinstance(source, StreamSpec) else StreamSpec(url=source)
    validate_stream_url(stream_spec.url, destinations.schemes if destinations is not None else ALLOWED_SCHEMES)
    session = _Session(
        stream_spec,
        spec,
        started_at,
        stop or threading.Event(),
        reconnect or ReconnectPolicy(),
        report if report is not None else IngestReport(),
        destinations,
        archive,
    )
    if resume is not None:
        session.resume_from(resume)
    yield from session.run()


class _Session:
    """State of one live recording across connections: clock anchor, cutter, counters."""

    def __init__(
        self,
        stream_spec: StreamSpec,
        spec: ClipSpec,
        started_at: datetime | None,
        stop: threading.Event,
        policy: ReconnectPolicy,
        report: IngestReport,
        destinations: DestinationPolicy | None = None,
        archive: StreamArchiveWriter | None = None,
    ) -> None:
        self.stream_spec = stream_spec
        self.archive = archive
        self.destinations = destinations
        self.spec = spec
        self.name = redact_url(stream_spec.url)
        self.started_at = started_at.replace(tzinfo=UTC) if started_at and started_at.tzinfo is None else started_at
        self.anchor: float | None = None  # POSIX time of recording second 0, fixed at the first connection
        self.stop = stop
        self.policy = policy
        self.report = report
        self.errors = ErrorLog(self.name, report)
        self.interval = 1.0 / spec.sample_fps
        self.cutter = cutter_for(spec, 0.0, self.interval)
        self.last_t: float | None = None  # recording seconds of the last frame received
        self.drops = 0
        self.frames_received = 0

    def resume_from(self, resume: StreamResume) -> None:
        """Continue indices after an earlier reader; its last clip's end counts as the last frame received."""
        self.cutter.index = resume.next_clip
        self.frames_received = resume.next_frame
        self.last_t = resume.after
        self.report.clips = resume.next_clip

    def run(self) -> Iterator[Clip]:
        failures = 0
        last_error = "no attempt made"
        while not self.stop.is_set():
            try:
                # The connection time anchors this connection's first frame: taken *before* opening,
                # because opening reads (and buffers) up to a few seconds of the stream to probe it.
                if self.destinations is not None:
                    self.destinations.check(self.stream_spec.url)
                connected = time.time()
                container = self._connect()
            except InvalidVideoError:
                raise
            except (av.FFmpegError, OSError, DestinationUnresolved) as exc:
                failures += 1
                last_error = self._scrub(str(exc))
                if isinstance(exc, av.ArgumentError) and self.stream_spec.formats is not None:
                    # FFmpeg says only "Invalid argument" when the probed format is not on the whitelist.
                    last_error += f" (a stream format other than {', '.join(self.stream_spec.formats)}?)"
                log.info("%s: connection attempt %d failed: %s", self.name, failures, last_error)
            else:
                with container:
                    try:
                        delivered, reason = yield from self._read(container, connected)
                    finally:  # the connection's segment is closed whatever ended it (stop, drop, error)
                        if self.archive is not None:
                            self.archive.disconnect()
                if self.stop.is_set():
                    break
                self._note_drop(reason)
                last_error = reason
                # A connection that delivered video resets the count; one that did not is a failed attempt.
                failures = 0 if delivered else failures + 1
            limit = self.policy.max_attempts
            if limit is not None and failures >= limit:
                message = f"stream {self.name} unavailable after {failures} attempts: {last_error}"
                self.errors.add(message)
                raise StreamError(message)
            self.stop.wait(self.policy.delay(max(failures, 1)))
        log.info("%s: stopped after %d clips, %d outages", self.name, self.report.clips, self.drops)

    def _connect(self) -> av.container.InputContainer:
        spec = self.stream_spec
        container = av.open(
            spec.url, mode="r", container_options=spec.ffmpeg_options(), timeout=(spec.open_timeout, spec.read_timeout)
        )
        try:
            stream = video_stream(container, self.name)
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            if width * height > spec.max_pixels:
                limit = spec.max_pixels
                raise InvalidVideoError(f"video dimensions {width}x{height} exceed the limit of {limit} pixels")
        except BaseException:
            container.close()
            raise
        return container

    def _read(
        self, container: av.container.InputContainer, connected: float
    ) -> Generator[Clip, None, tuple[bool, str]]:
        """Clips from one connection; returns (delivered any frame, why the connection ended)."""
        stream = video_stream(container, self.name)
        stream.thread_type = "AUTO"
        if self.anchor is None:
            self.anchor = connected if self.started_at is None else self.started_at.timestamp()
        if self.archive is not None:
            self.archive.connect(stream, self._wall_origin())
        fps = frame_rate(stream)
        # Same sample interval, grid tolerance and gap threshold as iter_clips, from this connection's rate.
        self.interval = max(1.0 / self.spec.sample_fps, 1.0 / fps if fps > 0 else 0.0)
        fitted = cutter_for(self.spec, fps, self.interval)
        self.cutter.tolerance, self.cutter.gap = fitted.tolerance, fitted.gap
        rotation = rotation_from_metadata(stream.metadata)
        reformatter = VideoReformatter()
        reason = ["the stream ended"]
        timeline: Timeline | None = None
        delivered = False
        for frame in decode(self._packets(container, stream, reason), stream, self.errors):
            if self.stop.is_set():
                return delivered, "stopped"
            timeline = self._timeline_for(frame, stream, fps, connected, timeline)
            _, t, keep = timeline.step(frame.pts)
            if self.archive is not None:
                self.archive.frame(frame, timeline)
            index = self.frames_received  # frame indices continue across connections
            self.frames_received += 1
            if not delivered:
                delivered = True
                self._mark_outage(t)
            self.last_t = t
            if not keep:
                continue
            if rotation is None:
                rotation = rotation_from_frame(frame)
            image = frame_to_rgb(frame, self.spec.size, rotation, reformatter)
            done = self.cutter.push(Sample(index, t, image))
            if done is not None:
                self.report.clips = done[0] + 1
                yield build_clip(done[0], done[1], self.interval, self._wall_origin())
        return delivered, reason[0]

    def _packets(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, reason: list[str]
    ) -> Iterator[av.Packet]:
        try:
            for packet in container.demux(stream):
                if self.stop.is_set():
                    return
                if packet.size > 0:
                    if self.archive is not None:
                        self.archive.packet(packet)
                    yield packet
        except av.FFmpegError as exc:
            reason[0] = self._scrub(f"read failed: {exc}")

    def _timeline_for(
        self,
        frame: av.VideoFrame,
        stream: av.video.stream.VideoStream,
        fps: float,
        connected: float,
        current: Timeline | None,
    ) -> Timeline:
        """The timeline for this frame: a new one on connection and when the stream's clock jumps back.

        A camera or relay restart (or a 33-bit MPEG-TS pts wrap, every 26.5 h) sends timestamps that go
        backwards; continuing would put frames before earlier ones. The new timeline starts one frame
        interval after the last frame instead, without a gap.
        """
        if current is not None and not (
            frame.pts is not None and current.last_pts is not None and frame.pts < current.last_pts
        ):
            return current
        assert self.anchor is not None
        after_last = self.last_t + (1.0 / fps if fps > 0 else self.interval) if self.last_t is not None else 0.0
        # nor before what the archive holds: a reader that died archived frames past its last clip, and a camera
        # that bursts on connect runs its frames ahead of the wall clock, so a quick reconnect could overlap them
        archived = self.archive.archived_until if self.archive is not None else 0.0
        if current is None:  # a new connection: wall-clock position, but never before earlier frames
            offset = max(connected - self.anchor, after_last, archived, 0.0)
        else:
            offset = max(after_last, archived)
            log.warning("%s: timestamps jumped back; continuing at %.2f s", self.name, offset)
        time_base = Fraction(stream.time_base) if stream.time_base is not None else None
        return Timeline(
            fps=fps,
            time_base=time_base,
            origin=None,
            sample_fps=self.spec.sample_fps,
            report=self.report,
            name=self.name,
            offset=offset,
        )

    def _mark_outage(self, first_t: float) -> None:
        """Record the outage that ended with the first frame of a connection (none for the first one)."""
        if self.last_t is None:
            return
        self.report.gaps.append((round(self.last_t, 6), round(first_t, 6)))
        if self.archive is not None:
            self.archive.gap(self.last_t, first_t)
        log.warning("%s: no video between %.2f s and %.2f s", self.name, self.last_t, first_t)

    def _note_drop(self, reason: str) -> None:
        self.drops += 1
        self.cutter.break_segment()
        where = f" at {self.last_t:.2f} s" if self.last_t is not None else ""
        if self.drops <= _MAX_DROP_MESSAGES:
            self.errors.add(f"stream dropped{where} ({reason}); reconnecting")

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's secrets (FFmpeg errors quote the URL they failed on)."""
        return scrub(text, self.stream_spec.url)

    def _wall_origin(self) -> datetime | None:
        assert self.anchor is not None
        return self.started_at if self.started_at is not None else datetime.fromtimestamp(self.anchor, UTC)
