"""Streaming multipart parser for uploads: the file part goes straight to its final place on disk.

Starlette's ``request.form()`` spools a file to a temporary file before the route sees it, so a too-large
upload is only noticed after it has been received in full, and every byte is written twice. Here the body is
parsed as it arrives: the file is hashed and written in one pass, and the size limit stops the transfer at
the first byte over it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from server.services.uploads import UploadTooLargeError, safe_filename

MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME = 255  # kept as the recording's source
MAX_PARTS = 32  # the form has a handful of fields: thousands of 64 KiB parts would all be held in memory
# RFC 2046 section 5.1.1: 1 to 70 characters from this set, not ending in a space. python-multipart itself
# fails on a boundary over 256 bytes with an error of its own (a 500 if it escaped).
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class MultipartError(ValueError):
    """The request body is not the multipart form the endpoint expects."""


@dataclass
class StreamedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0
    sha256: str = ""


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _Receiver:
    """python-multipart callbacks writing the ``file_field`` part to ``dest_dir`` and collecting the rest."""

    def __init__(self, dest_dir: Path, limit: int, file_field: str) -> None:
        self.dest_dir = dest_dir
        self.limit = limit
        self.file_field = file_field
        self.result = StreamedUpload()
        self._digest = hashlib.sha256()
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._out: BinaryIO | None = None
        self._parts = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._header_field, "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MultipartError(f"the form has more than {MAX_PARTS} parts")
        self._part = _Part()
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace") or None
        raw_filename = options.get(b"filename")
        self._part.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        if self._part.filename is not None:
            if len(self._part.filename) > MAX_FILENAME:
                raise MultipartError(f"the file name is longer than {MAX_FILENAME} characters")
            if "\x00" in self._part.filename:
                raise MultipartError("the file name must not contain NUL characters")
        if self._part.name == self.file_field:
            if self.result.path is not None:
                raise MultipartError(f"more than one '{self.file_field}' part")
            self.result.filename = self._part.filename or "upload"
            self.result.path = self.dest_dir / safe_filename(self.result.filename)
            self.dest_dir.mkdir(parents=True, exist_ok=True)
            self._out = self.result.path.open("wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self.result.size += end - start
            if self.result.size > self.limit:
                raise UploadTooLargeError(f"upload exceeds the limit of {self.limit} bytes")
            chunk = data[start:end]
            self._digest.update(chunk)
            self._out.write(chunk)
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise MultipartError(f"form field '{self._part.name}' is larger than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self.result.sha256 = self._digest.hexdigest()
        elif self._part.name:
            self.result.fields[self._part.name] = self._part.data.decode("utf-8", "replace")

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self.result.path is not None:
            self.result.path.unlink(missing_ok=True)


async def receive_upload(content_type: str | None, body: AsyncIterator[bytes], dest_dir: Path, *, limit: int,
                         file_field: str = "file") -> StreamedUpload:
    """Parse a ``multipart/form-data`` body, writing ``file_field`` into ``dest_dir``.

    Raises MultipartError for a body that is not multipart or has no file, UploadTooLargeError past ``limit``;
    in both cases nothing is left on disk.
    """
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise MultipartError("send the recording as multipart/form-data with a 'file' part")
    if not _BOUNDARY.fullmatch(boundary):
        raise MultipartError("the multipart boundary must be 1 to 70 characters of letters, digits and "
                             "'()+_,-./:=? (RFC 2046)")
    receiver = _Receiver(dest_dir, limit, file_field)
    parser = MultipartParser(boundary, receiver.callbacks())
    try:
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except FormParserError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from exc
        if receiver.result.path is None:
            raise MultipartError(f"the form has no '{file_field}' part")
        if receiver._out is not None:
            raise MultipartError("the upload ended in the middle of the file (incomplete request)")
    except BaseException:
        receiver.abort()
        raise
    return receiver.result
