"""Receive a multipart form as it streams in: the file goes to the object store chunk by chunk.

Starlette's ``request.form()`` spools files to a temporary file and only then
hands them over, so a size limit is checked after the whole body has arrived.
Here python-multipart's push parser is fed from ``request.stream()``: the
file's chunks go straight to an ``ObjectWriter`` (a local file or an S3
multipart upload, ``infra/storage.py``), the size limit and the content
sniffing cut the request off at the first chunk that breaks them, and nothing
larger than one chunk of the request is held here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from infra.storage import ObjectWriter

from .errors import HttpError

# Bytes the sniffer needs to tell one image format from another.
HEAD_BYTES = 16


@dataclass
class ReceivedFile:
    size: int = 0
    # SHA-256 of the file's bytes, if asked for.
    digest: hashlib._Hash | None = None
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
        limits: FormLimits,
        hash_file: bool,
    ) -> None:
        self.form = ReceivedForm()
        self._file_field = file_field
        self._limits = limits
        self._hash_file = hash_file
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        # Every field counts, however many share a name.
        self._field_count = 0
        self._name = ""
        self._value = bytearray()
        # The file's chunks parsed from the latest piece of the body, not yet stored.
        self.pending: list[bytes] = []
        self._in_file = False
        # The file's first bytes, for the sniffer; complete once ``head_ready``.
        self.head = b""
        self.head_ready = False

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
        return self._in_file

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
            digest=hashlib.sha256() if self._hash_file else None,
            filename=filename.decode("utf-8", "replace"),
            content_type=content_type.decode("latin-1") if content_type else None,
        )
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._in_file:
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
        if not self.head_ready:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
            self.head_ready = len(self.head) >= HEAD_BYTES
        if self.form.file.digest is not None:
            self.form.file.digest.update(chunk)
        self.pending.append(chunk)

    def _part_end(self) -> None:
        if not self._in_file:
            self.form.fields[self._name] = self._value.decode("utf-8", "replace")
            return
        self._in_file = False
        # A file shorter than HEAD_BYTES is sniffed whole; an empty one is no file (422 from
        # the caller), not a file of an unknown type.
        self.head_ready = bool(self.head)


async def receive_form(
    request: Request,
    *,
    file_field: str,
    limits: FormLimits,
    open_file: Callable[[bytes], ObjectWriter],
    hash_file: bool = False,
) -> ReceivedForm:
    """Parse a ``multipart/form-data`` body; its one file (if any) is stored as it arrives.

    ``open_file`` gets the file's first bytes (HEAD_BYTES, or all of a shorter
    file), raises to reject it, or returns the writer its bytes go to; the file
    is committed once the body has ended well, aborted otherwise. Raises
    HttpError: 415 if the body is not multipart, 413 past a limit, 400 if it is
    malformed or cut off, 422 for a file in another field or a second file.
    With ``hash_file``, ``file.digest`` is the SHA-256 of its bytes.
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
    reader = _FormReader(file_field=file_field, limits=limits, hash_file=hash_file)
    parser = MultipartParser(boundary, reader.callbacks(), max_size=max_body)  # type: ignore[arg-type]
    writer: ObjectWriter | None = None
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if reader.pending and (writer is not None or reader.head_ready):
                    writer = writer or open_file(reader.head)
                    for data in reader.pending:
                        await writer.write(data)
                    reader.pending.clear()
            parser.finalize()
        except MultipartParseError as exc:
            raise HttpError(400, "malformed_multipart", f"malformed multipart body: {exc}") from exc
        if reader.inside_file:
            raise HttpError(400, "malformed_multipart", "the body ends inside the file")
        if reader.pending:  # a file shorter than HEAD_BYTES
            writer = writer or open_file(reader.head)
            for data in reader.pending:
                await writer.write(data)
        if writer is not None:
            await writer.commit()
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise
    return reader.form
