"""Wardwatch ingest: validate, decode and cut recordings into clips; generate synthetic ward video.

A plain library (no database, HTTP or environment variables): paths and small dataclass configs in,
numpy arrays and dataclasses out. The server imports it; it imports nothing of the server or model.

- :func:`ingest.probe.probe` -- refuse bad files early, describe good ones (:class:`VideoInfo`).
- :func:`ingest.clips.iter_clips` -- stream fixed-length clips of sampled frames (:class:`ClipSpec`),
  resumable at any clip index (``start_index``).
- :func:`ingest.stream.iter_stream_clips` -- the same from a live rtsp/rtmp/http(s)/udp/tcp stream,
  with reconnects and outage gaps.
- :class:`ingest.destinations.DestinationPolicy` -- which stream hosts a reader may connect to (SSRF guard).
- :class:`ingest.watch.WatchFolder` -- new, completely written files of a folder, each offered once.
- :func:`ingest.paths.resolve_import_path` -- server-side import paths, confined to the import directory.
- :func:`ingest.export.export_clip` -- browser-playable H.264 review clip of an event
  (:func:`ingest.export.export_archive_clip`: the same from a live stream's archive).
- :mod:`ingest.archive` -- a live stream on disk as it is read: rolling segments and their index
  (:class:`ingest.archive_writer.StreamArchiveWriter`, :mod:`ingest.archive_reader`, :mod:`ingest.archive_retention`).
- :func:`ingest.timestamps.started_at_from_filename` -- recording start from a file-name pattern.
- :mod:`ingest.decode` -- frame iteration and random access (PyAV, decord).
- :func:`ingest.synthetic.generate` -- deterministic patient-room video with annotations.
"""

from ingest.archive import ArchiveSpec
from ingest.archive_writer import StreamArchiveWriter
from ingest.clips import Clip, ClipSpec, IngestReport, iter_clips
from ingest.decode import iter_frames, read_frame, read_frames
from ingest.destinations import DestinationPolicy
from ingest.errors import (
    ArchiveError,
    DecodeError,
    DestinationRefused,
    DestinationUnresolved,
    IngestError,
    InvalidVideoError,
    StreamError,
    UnsafePathError,
)
from ingest.export import ExportedClip, export_archive_clip, export_clip, export_review_clip
from ingest.paths import resolve_import_path
from ingest.probe import VideoInfo, probe
from ingest.stream import ReconnectPolicy, StreamSpec, iter_stream_clips, validate_stream_url
from ingest.timestamps import started_at_from_filename
from ingest.watch import WatchFolder

__all__ = [
    "ArchiveError",
    "ArchiveSpec",
    "ExportedClip",
    "Clip",
    "ClipSpec",
    "DecodeError",
    "DestinationPolicy",
    "DestinationRefused",
    "DestinationUnresolved",
    "IngestError",
    "IngestReport",
    "InvalidVideoError",
    "ReconnectPolicy",
    "StreamArchiveWriter",
    "StreamError",
    "StreamSpec",
    "UnsafePathError",
    "VideoInfo",
    "WatchFolder",
    "export_archive_clip",
    "export_clip",
    "export_review_clip",
    "iter_clips",
    "iter_frames",
    "iter_stream_clips",
    "probe",
    "read_frame",
    "read_frames",
    "resolve_import_path",
    "started_at_from_filename",
    "validate_stream_url",
]
