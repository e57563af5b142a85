"""A push reader of `multipart/form-data` for the upload route: fields as text, the file's
bytes as they arrive, so a big upload is written to its place without being held in memory
or copied through a spool first.

Sans-I/O: `FormReader.feed(chunk)` returns what the chunk completed (`Field`, `FileStart`,
file bytes, `FileEnd`); the route does the disk work. The parsing itself is python-multipart's
`MultipartParser` (the library Starlette's own form parser drives).
"""

from __future__ import annotations

import attrs
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ._errors import ApiError, bad_request

__all__ = ["Field", "FileEnd", "FileStart", "FormReader", "boundary_of"]

MAX_FIELD_BYTES = 1024 * 1024
"""A text field's largest value (a target path is far shorter)."""


@attrs.frozen
class Field:
    """A complete text field."""

    name: str
    value: str


@attrs.frozen
class FileStart:
    """A file part begins (a part whose Content-Disposition has a filename); its bytes follow."""

    name: str
    filename: str


@attrs.frozen
class FileEnd:
    """The file part's bytes are complete."""


Event = Field | FileStart | FileEnd | bytes


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a `multipart/form-data` content type; None for any other type."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return None
    return boundary


def _text(raw: bytes) -> str:
    # browsers and httpx send UTF-8; anything else is taken byte for byte
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FormReader:
    """Parse one multipart body chunk by chunk; at most `max_files` files, `max_fields` fields."""

    def __init__(self, boundary: bytes, *, max_files: int = 1, max_fields: int = 10) -> None:
        self._max_files = max_files
        self._max_fields = max_fields
        self._files = 0
        self._fields = 0
        self._events: list[Event] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self.complete = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> list[Event]:
        """What `chunk` completed, in order (file bytes may come in several pieces)."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise bad_request(f"the upload is not valid multipart/form-data: {exc}") from None
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """The body ended: 400 if the multipart message did not."""
        if not self.complete:
            raise bad_request(
                "the upload's multipart body ended before its closing boundary: send the whole form"
            )

    # ------------------------------------------------------------ parser callbacks

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise bad_request(
                "a part of the upload has no Content-Disposition: form-data; name=...: "
                "send the file as field 'file' and the target as field 'path'"
            )
        self._name = _text(options[b"name"])
        self._is_file = b"filename" in options
        if self._is_file:
            self._files += 1
            if self._files > self._max_files:
                raise bad_request(f"too many files in one upload: at most {self._max_files}")
            self._events.append(FileStart(self._name, _text(options[b"filename"])))
        else:
            self._fields += 1
            if self._fields > self._max_fields:
                raise bad_request(f"too many fields in one upload: at most {self._max_fields}")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self._events.append(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise ApiError(
                413,
                "ERR_PAYLOAD_TOO_LARGE",
                f"upload field {self._name!r} is over {MAX_FIELD_BYTES} bytes",
            )

    def _on_part_end(self) -> None:
        if self._is_file:
            self._events.append(FileEnd())
        else:
            self._events.append(Field(self._name, _text(bytes(self._value))))

    def _on_end(self) -> None:
        self.complete = True
