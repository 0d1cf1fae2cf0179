"""Receive a multipart form as it streams in: the file goes to disk chunk by chunk.

Starlette's ``request.form()`` spools files to a temporary file and only then
hands them over, so a size limit is checked after the whole body has arrived.
Here python-multipart's push parser is fed from ``request.stream()``: the file
is written straight into its final directory, the size limit and the content
sniffing cut the request off at the first chunk that breaks them, and nothing
larger than one chunk is held in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import HttpError

# Bytes the sniffer needs to tell one image format from another.
HEAD_BYTES = 16


@dataclass
class ReceivedFile:
    path: Path
    size: int = 0
    # As the client sent them: shown to people, never used as a path.
    filename: str | None = None
    content_type: str | None = None


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file: ReceivedFile | None = None


@dataclass(frozen=True, slots=True)
class FormLimits:
    max_file_bytes: int
    max_field_bytes: int = 4_096
    max_fields: int = 16


class _FormReader:
    """python-multipart callbacks that build a ReceivedForm; errors raise HttpError."""

    def __init__(
        self,
        *,
        file_field: str,
        file_path: Path,
        limits: FormLimits,
        sniff: Callable[[bytes], None],
    ) -> None:
        self.form = ReceivedForm()
        self._file_field = file_field
        self._file_path = file_path
        self._limits = limits
        self._sniff = sniff
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        # Every field counts, however many share a name.
        self._field_count = 0
        self._name = ""
        self._value = bytearray()
        self._out: BinaryIO | None = None
        self._head = b""
        self._sniffed = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    @property
    def inside_file(self) -> bool:
        """The body ended before the file part did."""
        return self._out is not None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def _part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self._field_count += 1
            if self._field_count > self._limits.max_fields:
                raise HttpError(413, "too_many_fields", "the form has too many fields")
            return
        if self._name != self._file_field:
            raise HttpError(
                422, "unexpected_file", f"files go in the {self._file_field!r} field only"
            )
        if self.form.file is not None:
            raise HttpError(422, "too_many_files", "one file per request")
        content_type = self._headers.get(b"content-type")
        self.form.file = ReceivedFile(
            path=self._file_path,
            filename=filename.decode("utf-8", "replace"),
            content_type=content_type.decode("latin-1") if content_type else None,
        )
        self._file_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self._file_path, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._out is None:
            self._value += chunk
            if len(self._value) > self._limits.max_field_bytes:
                raise HttpError(413, "field_too_large", f"the field {self._name!r} is too large")
            return
        assert self.form.file is not None
        self.form.file.size += len(chunk)
        if self.form.file.size > self._limits.max_file_bytes:
            raise HttpError(
                413,
                "file_too_large",
                f"the file is larger than {self._limits.max_file_bytes} bytes",
            )
        if not self._sniffed:
            self._head += chunk[:HEAD_BYTES]
            if len(self._head) >= HEAD_BYTES:
                self._sniff(self._head)
                self._sniffed = True
        # Page-cache writes of one chunk: cheaper than a thread hop.
        self._out.write(chunk)

    def _part_end(self) -> None:
        if self._out is None:
            self.form.fields[self._name] = self._value.decode("utf-8", "replace")
            return
        self._out.close()
        self._out = None
        # An empty file is no file (422 from the caller), not a file of an unknown type.
        if not self._sniffed and self._head:
            self._sniff(self._head)  # a file shorter than HEAD_BYTES
            self._sniffed = True


async def receive_form(
    request: Request,
    *,
    file_field: str,
    file_path: Path,
    limits: FormLimits,
    sniff: Callable[[bytes], None],
) -> ReceivedForm:
    """Parse a ``multipart/form-data`` body; its one file (if any) is written to ``file_path``.

    Raises HttpError: 415 if the body is not multipart, 413 past a limit, 400 if
    it is malformed or cut off, 422 for a file in another field or a second file;
    ``sniff`` gets the file's first bytes and raises to reject it. On error the
    caller removes what was written.
    """
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise HttpError(415, "not_multipart", "send the image as multipart/form-data")
    declared = request.headers.get("content-length")
    # The body may exceed the file by its part headers and small fields.
    max_body = limits.max_file_bytes + limits.max_fields * limits.max_field_bytes + 16_384
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise HttpError(
            413, "file_too_large", f"the file is larger than {limits.max_file_bytes} bytes"
        )
    reader = _FormReader(file_field=file_field, file_path=file_path, limits=limits, sniff=sniff)
    parser = MultipartParser(boundary, reader.callbacks(), max_size=max_body)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise HttpError(400, "malformed_multipart", f"malformed multipart body: {exc}") from exc
    finally:
        reader.close()
    if reader.inside_file:
        raise HttpError(400, "malformed_multipart", "the body ends inside the file")
    return reader.form
