"""The packet -> frame loop shared by every reader: error tolerant, with a bounded error log.

Why separate demuxing from decoding: the decode-only-what-is-needed path (:mod:`ingest._plan`) and the
resume scan look at packets before (or instead of) decoding them, while all paths must treat corrupt
packets and truncated containers the same way: skip and warn, or stop and flush what the decoder holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av

from ingest.report import IngestReport

log = logging.getLogger(__name__)

# Report at most this many individual corrupt-packet messages per file; the rest are summarised so a
# badly damaged file cannot grow the report (and the database row behind it) without bound.
MAX_ERROR_MESSAGES = 20


class ErrorLog:
    """Collects decode problems into an optional report, logging each and capping the message count."""

    def __init__(self, name: str, report: IngestReport | None) -> None:
        self.name = name
        self.report = report
        self.bad_packets = 0
        self.corrupt_frames = 0

    def add(self, message: str) -> None:
        log.warning("%s: %s", self.name, message)
        if self.report is not None:
            self.report.errors.append(message)

    def bad_packet(self, position: float | None, exc: Exception) -> None:
        self.bad_packets += 1
        if self.bad_packets <= MAX_ERROR_MESSAGES:
            where = f" near {position:.2f} s" if position is not None else ""
            self.add(f"skipped a corrupt packet{where}: {exc}")

    def finish(self) -> None:
        if self.bad_packets > MAX_ERROR_MESSAGES:
            self.add(f"{self.bad_packets} corrupt packets skipped in total")
        if self.corrupt_frames:
            self.add(f"{self.corrupt_frames} frames decoded with errors (concealed by the decoder)")


def demux(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, errors: ErrorLog
) -> Iterator[av.Packet]:
    """Yield the stream's non-empty packets in file (decode) order.

    A demuxer failure (truncated or damaged container, dropped network connection) ends the iteration
    with a message in the error log instead of raising: the frames read so far are still good.
    """
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                yield packet
    except av.FFmpegError as exc:
        errors.add(f"stopped reading the file early (truncated or corrupt container): {exc}")


def decode(
    packets: Iterable[av.Packet], stream: av.video.stream.VideoStream, errors: ErrorLog
) -> Iterator[av.VideoFrame]:
    """Decode ``packets`` into frames in presentation order, skipping corrupt packets, then flush.

    A corrupt packet is logged and skipped (the decoder resynchronises at the next keyframe); after the
    last packet the decoder is drained so the frames it still holds (B-frame reordering, frame threads)
    come out too.
    """
    codec = stream.codec_context
    time_base = Fraction(stream.time_base) if stream.time_base is not None else None
    for packet in packets:
        try:
            frames = codec.decode(packet)
        except av.error.EOFError:
            return
        except av.FFmpegError as exc:
            pos = float(packet.pts * time_base) if packet.pts is not None and time_base else None
            errors.bad_packet(pos, exc)
            continue
        for frame in frames:
            if frame.is_corrupt:
                errors.corrupt_frames += 1
            yield frame
    try:
        yield from codec.decode(None)
    except av.FFmpegError:
        pass


def prepend(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    """``first``, then ``rest``: a frame read to check where a seek landed goes back in front."""
    yield first
    yield from rest


def decoded_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, errors: ErrorLog
) -> Iterator[av.VideoFrame]:
    """Every decodable frame of ``stream`` in presentation order (see :func:`demux` and :func:`decode`)."""
    return decode(demux(container, stream, errors), stream, errors)
