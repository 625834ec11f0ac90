"""Uploaded files: copied to the data directory in chunks, hashed on the way, size-limited."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadTooLargeError(ValueError):
    """The upload exceeds the configured limit."""


def safe_filename(name: str | None) -> str:
    """A file name that cannot escape its directory (no separators, no leading dots)."""
    stem = _SAFE_NAME.sub("_", Path(name or "upload").name).lstrip(".") or "upload"
    return stem[-120:]


def store_stream(source: BinaryIO, dest: Path, *, limit: int, chunk: int = 1024 * 1024) -> tuple[int, str]:
    """Copy ``source`` to ``dest`` without holding it in memory; returns (bytes, sha256).

    Raises UploadTooLargeError (and removes the partial file) once more than ``limit`` bytes arrive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with dest.open("wb") as out:
            while block := source.read(chunk):
                size += len(block)
                if size > limit:
                    raise UploadTooLargeError(f"upload exceeds the limit of {limit} bytes")
                digest.update(block)
                out.write(block)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


class TruncatedUploadError(ValueError):
    """The uploaded MP4/MOV ends before the data its own boxes declare."""


def check_complete_mp4(path: Path) -> None:
    """Refuse an ISO-BMFF file (MP4, MOV, M4V) whose top-level boxes run past the end of the file.

    An upload cut short is a transfer problem the sender can fix by sending again, so it gets a clear 4xx
    instead of a silently partial recording. Walking the top-level boxes reads a few bytes per box.
    Other containers pass through (their truncation shows up as a partial ingest with a warning).
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[4:8] != b"ftyp":
            return
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                raise TruncatedUploadError(f"file is truncated: box header cut at byte {offset} of {size}")
            box_size = int.from_bytes(header[:4], "big")
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # box extends to the end of the file
                return
            if box_size < 8:
                raise TruncatedUploadError(f"file is corrupt: invalid box size at byte {offset}")
            if offset + box_size > size:
                kind = header[4:8].decode("latin-1")
                raise TruncatedUploadError(
                    f"file is truncated: its '{kind}' box needs {offset + box_size} bytes but the file has {size}"
                    " (incomplete upload? send it again)"
                )
            offset += box_size
