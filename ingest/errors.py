"""Exceptions raised by the ingest package.

Why a small hierarchy: the server maps :class:`InvalidVideoError` to a 4xx answer for the uploader
("this file is not something we can read") and :class:`DecodeError` to a failed ingest job, while
both can be caught together as :class:`IngestError`. ``str(err)`` is always a message a clinician or
an integrator can act on, never a bare FFmpeg error code.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class of every ingest failure; ``str(err)`` is a clear, user-facing message."""


class InvalidVideoError(IngestError):
    """The file cannot be accepted at all.

    Raised for an empty file, a file that is not a video (text, image, ...), a container without a
    video stream, an unsupported codec, absurd dimensions or duration, or a file in which not a
    single frame decodes. Raised *before* any costly decoding where possible.
    """


class DecodeError(IngestError):
    """Decoding failed part-way through a file that was accepted by :func:`ingest.probe.probe`."""


class StreamError(DecodeError):
    """A live stream could not be (re)connected within the reconnect policy's attempts.

    Clips yielded before it was raised are complete and valid; the message names the URL without
    credentials and the last connection error.
    """


class ArchiveError(DecodeError):
    """A live stream's archive cannot give the video asked for: no segment holds that time, or the segment that
    does is missing, was removed by retention, is still being written, or is corrupt or truncated.

    The message names the segment file and the recording seconds it held, so an operator knows what was lost.
    """


class DestinationRefused(InvalidVideoError, ValueError):
    """A stream URL names a destination the :class:`ingest.destinations.DestinationPolicy` refuses (a loopback,
    link-local, metadata, multicast or reserved address, or one outside the allow-list).

    The message names the host, the address and the rule, never the URL's credentials or query.
    """


class DestinationUnresolved(IngestError):
    """A stream host name did not resolve, so its addresses could not be checked.

    At submission it is a refusal; before a reconnect it is one failed attempt (DNS may be back next time).
    """


class UnsafePathError(InvalidVideoError, ValueError):
    """A server-side import path points outside the import directory (``..``, absolute path, symlink).

    Also a :class:`ValueError`, because it is the caller's argument that is wrong, not the video.
    """
