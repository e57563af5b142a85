"""An upload's `multipart/form-data` body, streamed from its source.

AgentRun's upload (`POST /filesystem/upload`, agentrun-api.md §3.3) takes a multipart form
with fields `path` (the target) and `file`. The form is framed here around the source's
bytes, which are read chunk by chunk as the request goes out: a file of any size costs one
chunk of memory. The length is announced (`Content-Length`) whenever the source's size is
known beforehand: a path, bytes, or a seekable file; an iterable of bytes goes with chunked
transfer encoding (the service does not document whether it takes that; the emulator does).

Both planes use it: `iter_bytes` for the sync one, `aiter_bytes` for the async one; each
call starts the body again (a retry after a connect failure, when nothing was read yet).
"""

from __future__ import annotations

import io
import os
import pathlib
import posixpath
import secrets
import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import IO, Union, cast

from ._errors import InvalidArgumentError

__all__ = ["CHUNK", "UploadBody", "UploadSource"]

CHUNK = 1024 * 1024
"""Bytes read from the source at a time (fewer, larger writes cost less per byte)."""

UploadSource = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Iterable[bytes]
]
"""What `upload` sends: a local file's path, the bytes themselves, a binary file object
open for reading (read from its current position), or an iterable of bytes."""

_KINDS = "a local file path, bytes, a binary file object open for reading, or an iterable of bytes"


def _quote(value: str) -> bytes:
    # The form-data convention (WHATWG): CR, LF and '"' percent-encoded in a quoted name;
    # a backslash doubled, since RFC 2045 parsers (python-multipart's) unescape it.
    value = value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D")
    return value.replace("\n", "%0A").encode("utf-8")


def _size_of(handle: IO[bytes]) -> int | None:
    """How many bytes are left to read in a file object, or None when that cannot be known."""
    try:
        st = os.fstat(handle.fileno())
        if stat.S_ISREG(st.st_mode):
            return max(st.st_size - handle.tell(), 0)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        pass
    try:
        if handle.seekable():
            here = handle.tell()
            end = handle.seek(0, io.SEEK_END)
            handle.seek(here)
            return max(end - here, 0)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        pass
    return None


class UploadBody:
    """The multipart body for one upload; use as a context manager (it may open a file)."""

    def __init__(self, source: UploadSource | AsyncIterable[bytes], remote_path: str) -> None:
        self._opened: IO[bytes] | None = None
        self._handle: IO[bytes] | None = None
        self._data: bytes | memoryview | None = None
        self._iterable: Iterable[bytes] | AsyncIterable[bytes] | None = None
        self._start = 0
        self._started = False
        filename: str | None = None
        if isinstance(source, str | os.PathLike):
            local = pathlib.Path(source)
            self._opened = self._handle = local.open("rb")
            filename = local.name
        elif isinstance(source, bytes | bytearray | memoryview):
            self._data = memoryview(source).cast("B")
        elif hasattr(source, "read"):
            self._handle = self._check_readable(source)
            name = getattr(source, "name", None)
            if isinstance(name, str):
                filename = os.path.basename(name)
        elif isinstance(source, Iterable | AsyncIterable) and not isinstance(source, dict):
            self._iterable = cast("Iterable[bytes] | AsyncIterable[bytes]", source)
        else:
            raise InvalidArgumentError(
                f"upload takes {_KINDS}; got {type(source).__name__}. Wrap other data in "
                "bytes, or open the file with open(path, 'rb')"
            )
        if self._handle is not None:
            try:
                self._start = self._handle.tell() if self._handle.seekable() else 0
            except (OSError, ValueError) as exc:
                self.close()
                raise InvalidArgumentError(f"cannot read the file to upload: {exc}") from None
        self.filename = filename or posixpath.basename(remote_path.rstrip("/")) or "upload"
        self._boundary = secrets.token_hex(16)
        try:
            self._head = (
                self._part("path") + remote_path.encode("utf-8") + b"\r\n" + self._file_head()
            )
        except UnicodeEncodeError as exc:
            self.close()
            raise InvalidArgumentError(
                f"the upload's path or file name is not valid Unicode ({exc.reason} at "
                f"position {exc.start}); remove lone surrogates"
            ) from None
        self._tail = b"\r\n--" + self._boundary.encode() + b"--\r\n"
        self.size = self._source_size()
        self.headers = {"Content-Type": f"multipart/form-data; boundary={self._boundary}"}
        if self.size is not None:
            self.headers["Content-Length"] = str(len(self._head) + self.size + len(self._tail))

    @staticmethod
    def _check_readable(source: object) -> IO[bytes]:
        if isinstance(source, io.TextIOBase):
            raise InvalidArgumentError(
                "upload needs a binary file: this one is open in text mode; open it with "
                "open(path, 'rb')"
            )
        readable = getattr(source, "readable", None)
        try:
            ok = readable() if callable(readable) else True
        except ValueError:  # a closed file
            ok = False
        if not ok:
            raise InvalidArgumentError(
                "upload cannot read this file object (it is closed, or open for writing "
                "only); open it with open(path, 'rb')"
            )
        return source  # type: ignore[return-value]

    def _part(self, name: str) -> bytes:
        return (
            b"--"
            + self._boundary.encode()
            + b'\r\nContent-Disposition: form-data; name="'
            + (name.encode() + b'"\r\n\r\n')
        )

    def _file_head(self) -> bytes:
        return (
            b"--"
            + self._boundary.encode()
            + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + _quote(self.filename)
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )

    def _source_size(self) -> int | None:
        if self._data is not None:
            return len(self._data)
        if self._handle is not None:
            return _size_of(self._handle)
        return None

    # ------------------------------------------------------------ the body

    def _restart(self) -> None:
        """Go back to the source's start for another attempt (only a connect failure is
        retried, so nothing was read; a source that cannot rewind must not be used twice)."""
        if self._started:
            if self._handle is not None and self._handle.seekable():
                self._handle.seek(self._start)
            elif self._data is None:
                raise InvalidArgumentError(
                    "this upload's source was already read and cannot be rewound: pass a "
                    "path, bytes or a seekable file to upload it again"
                )
        self._started = True

    def _checked(self, chunk: object) -> bytes:
        if isinstance(chunk, bytes):
            return chunk
        if isinstance(chunk, bytearray | memoryview):
            return bytes(chunk)
        raise InvalidArgumentError(
            f"upload's source gave {type(chunk).__name__}, not bytes: open files in binary "
            "mode ('rb') and yield bytes"
        )

    def _file_chunks(self) -> Iterator[bytes]:
        """The sync part of the source: the bytes, the file, or a sync iterable."""
        if self._data is not None:
            for at in range(0, len(self._data), CHUNK):
                yield bytes(self._data[at : at + CHUNK])
        elif self._handle is not None:
            left = self.size
            while left is None or left > 0:
                want = CHUNK if left is None else min(CHUNK, left)
                chunk = self._checked(self._handle.read(want))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
            if left:
                raise InvalidArgumentError(
                    f"the file to upload ended {left} bytes early (it shrank while being "
                    "sent); upload it again once it is no longer written to"
                )
        elif isinstance(self._iterable, Iterable):
            for chunk in self._iterable:
                if chunk:
                    yield self._checked(chunk)

    def iter_bytes(self) -> Iterator[bytes]:
        """The whole body, from the start (for the sync plane)."""
        if isinstance(self._iterable, AsyncIterable) and not isinstance(self._iterable, Iterable):
            raise InvalidArgumentError(
                "an async iterable can only be uploaded with AsyncDataPlane; pass bytes, a "
                "file or a sync iterable here"
            )
        self._restart()
        yield self._head
        yield from self._file_chunks()
        yield self._tail

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The whole body, from the start (for the async plane; files are read as httpx's
        own multipart reads them: a chunk at a time on the event loop)."""
        self._restart()
        yield self._head
        if isinstance(self._iterable, AsyncIterable):
            async for chunk in self._iterable:
                if chunk:
                    yield self._checked(chunk)
        else:
            for chunk in self._file_chunks():
                yield chunk
        yield self._tail

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the file this body opened (a file object passed in stays open)."""
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def __enter__(self) -> UploadBody:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
