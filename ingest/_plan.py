"""Decode only what the sampler needs: plan H.264 packets before they reach the decoder.

Why: at the model's rate (8 fps out of a 25-30 fps recording) most decoded frames are thrown away.
H.264 marks pictures that no other picture references (``nal_ref_idc == 0``: typically the outer
B-frames of x264's B-pyramid, about half the frames of a phone or NVR recording); such a packet can be
left out when the sampler will not keep its frame, exactly as ``codec_context.skip_frame = "NONREF"``
would, but per packet, so non-reference frames that *are* wanted are still decoded. Between two IDR
frames nothing references across the boundary, so a whole GOP without a wanted frame, and the reference
frames after the last wanted one of a GOP, are left out too (the "seek by keyframe" of sparse sampling,
done while reading forward).

The sampler decides on *presentation* order while packets come in *decode* order, so packets wait in a
small reorder window until every earlier timestamp has been seen; the decisions are made by the same
:class:`ingest._timeline.Timeline` the full decode uses, so on an intact file the kept frames, their
indices and times are identical to a full decode (tested). On a damaged file they can differ: a packet
that fails to decode is simply missing here, while a full decode may pick a neighbouring frame.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av

from ingest._timeline import Timeline

log = logging.getLogger(__name__)

# Packets a frame can arrive ahead of an earlier-presented one in decode order. x264's deepest
# B-pyramid reorders by 4 frames, hardware encoders by less; 32 leaves ample room.
REORDER_WINDOW = 32
# Longest run of packets held back waiting for the next IDR before falling back to decoding every
# reference frame (bounds memory on open-GOP streams without IDR frames: a few MB of compressed data).
MAX_HELD_PACKETS = 600

_VCL_TYPES = frozenset({1, 2, 3, 4, 5})
_IDR = 5


@dataclass(frozen=True)
class NalInfo:
    """What the NAL headers of one H.264 access unit say.

    Attributes:
        vcl: the packet holds at least one coded slice.
        non_reference: every slice has ``nal_ref_idc == 0`` (no other picture may reference it).
        idr: the packet holds an IDR slice (nothing after it references anything before it).
    """

    vcl: bool
    non_reference: bool
    idr: bool


def avcc_length_size(extradata: bytes | None) -> int | None:
    """NAL length-prefix size of an ``avcC`` (MP4/MKV) stream, or None for Annex B (start codes)."""
    if extradata and len(extradata) >= 7 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    return None


def nal_headers(data: bytes, length_size: int | None) -> Iterator[int]:
    """Yield the first byte of each NAL unit of an access unit (length-prefixed or Annex B)."""
    n = len(data)
    if length_size is not None:
        pos = 0
        while pos + length_size < n:
            size = int.from_bytes(data[pos : pos + length_size], "big")
            pos += length_size
            if size <= 0:
                return
            yield data[pos]
            pos += size
        return
    pos = data.find(b"\x00\x00\x01")
    while 0 <= pos < n - 3:
        yield data[pos + 3]
        pos = data.find(b"\x00\x00\x01", pos + 3)


def nal_info(data: bytes, length_size: int | None) -> NalInfo:
    """Classify an H.264 packet from its NAL headers (a few bytes read, nothing decoded)."""
    vcl = idr = False
    non_reference = True
    for header in nal_headers(data, length_size):
        kind = header & 0x1F
        if kind in _VCL_TYPES:
            vcl = True
            non_reference = non_reference and (header >> 5) & 0x03 == 0
            idr = idr or kind == _IDR
    return NalInfo(vcl=vcl, non_reference=vcl and non_reference, idr=idr)


@dataclass
class Planned:
    """A packet with its decisions: ``frame`` is ``(index, seconds, keep)`` (None: no frame is shown)."""

    packet: av.Packet
    info: NalInfo
    frame: tuple[int, float, bool] | None = None
    needed: bool = True


class PacketPlanner:
    """Feeds packets' timestamps to a :class:`Timeline` and marks which packets must be decoded.

    Usage: ``for planned in planner.plan(packets): ...`` yields every packet in decode order once its
    fate is known. Only for H.264 with timestamps on every packet (check :func:`can_plan`).
    """

    def __init__(self, timeline: Timeline, length_size: int | None) -> None:
        self.timeline = timeline
        self.length_size = length_size
        self.heap: list[tuple[int, int]] = []  # (pts, seq) not yet given to the timeline
        self.waiting: dict[int, Planned] = {}  # seq -> packet awaiting its presentation rank
        self.held: deque[Planned] = deque()  # decode order, since the last IDR
        self.seq = 0
        self.last_ranked: int | None = None
        self.out_of_order = 0

    def plan(self, packets: Iterable[av.Packet]) -> Iterator[Planned]:
        for packet in packets:
            info = nal_info(bytes(packet), self.length_size)
            if info.idr and packet.pts is not None:
                # Nothing before an IDR is shown after it: every earlier frame can be ranked and the
                # GOP that ends here decided as a whole.
                self._rank_below(packet.pts)
                yield from self._release(gop_closed=True)
            item = Planned(packet, info)
            self.held.append(item)
            if packet.pts is not None and not packet.is_discard:
                heapq.heappush(self.heap, (packet.pts, self.seq))
                self.waiting[self.seq] = item
                self.seq += 1
            while len(self.heap) > REORDER_WINDOW:
                self._rank_one()
            if len(self.held) > MAX_HELD_PACKETS:
                yield from self._release(gop_closed=False)
        while self.heap:
            self._rank_one()
        yield from self._release(gop_closed=True)
        if self.out_of_order:
            log.warning("%s: %d packets arrived later than the reorder window", self.timeline.name, self.out_of_order)

    def _rank_one(self) -> None:
        pts, seq = heapq.heappop(self.heap)
        if self.last_ranked is not None and pts < self.last_ranked:
            self.out_of_order += 1
        self.last_ranked = pts
        self.waiting.pop(seq).frame = self.timeline.step(pts)

    def _rank_below(self, pts: int) -> None:
        while self.heap and self.heap[0][0] < pts:
            self._rank_one()

    def _release(self, *, gop_closed: bool) -> Iterator[Planned]:
        """Yield held packets whose fate is known.

        ``gop_closed``: the held packets form a complete GOP followed by an IDR (or the end), so a
        reference frame is needed only up to the last kept frame in decode order. Otherwise (too many
        held packets) every reference frame is needed and only undecided packets stay held.
        """
        if gop_closed:
            last_kept = max(
                (i for i, p in enumerate(self.held) if p.frame is not None and p.frame[2]),
                default=-1,
            )
            for i, p in enumerate(self.held):
                keep = p.frame is not None and p.frame[2]
                # A kept frame may reference any reference picture decoded before it in this GOP.
                p.needed = keep or (i <= last_kept and not p.info.non_reference)
            yield from self.held
            self.held.clear()
            return
        while self.held and (self.held[0].frame is not None or self.held[0].packet.pts is None):
            p = self.held.popleft()
            keep = p.frame is not None and p.frame[2]
            p.needed = keep or not p.info.non_reference
            yield p


def can_plan(stream: av.video.stream.VideoStream, first: av.Packet | None) -> bool:
    """True when packets of ``stream`` can be planned: H.264 whose first packet carries a timestamp."""
    try:
        name = stream.codec_context.name
    except (av.FFmpegError, ValueError):
        return False
    return name == "h264" and first is not None and first.pts is not None
