"""Data-plane file routes: read/write, list, stat, mkdir, move, remove, upload, download.

Paths are under /home/user or /tmp (`SandboxFS`). Every route reaches its file through
`SandboxFS.parent`/`open_dir` (a descriptor walk that never follows a link) and acts on
descriptors, so sandboxed code swapping a file for a symlink meanwhile cannot point the
server at a file outside the sandbox. Disk work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import mimetypes
import os
import stat as stat_mod
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ._errors import ApiError, bad_request
from ._fs import HOME, MAX_DEPTH, TMP, Location, SandboxFS, os_error
from ._http import core_of, json_body, json_response, request_id
from ._multipart import Field, FileEnd, FileStart, FormReader, boundary_of
from ._records import MkdirRequest, MoveRequest, WriteFileRequest
from ._routes_sandbox import live
from ._threads import blocking
from ._tree import remove_tree

__all__ = [
    "MAX_READ_BYTES",
    "download",
    "list_dir",
    "mkdir",
    "move",
    "read_file",
    "remove",
    "stat",
    "upload",
    "write_file",
]

MAX_READ_BYTES = 16 * 1024 * 1024
"""`read_file` answers a file this big at most; bigger ones go through the download route
(a JSON answer of a file costs several times its size in server memory)."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
# JSON escapes these as \u00XX (six bytes for one): text holding them goes as base64
_CONTROL = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r"}


def _open_file(fs: SandboxFS, api_path: str) -> tuple[int, os.stat_result]:
    """A regular file opened for reading without following a link, and its fstat."""
    with fs.parent(api_path) as (dir_fd, name):
        try:
            fd = os.open(name, _READ, dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, api_path) from None
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        os.close(fd)
        raise bad_request(f"path {api_path!r} is not a regular file (use /filesystem to list)")
    return fd, st


def _read_small(fs: SandboxFS, api_path: str) -> tuple[bytes, dict[str, Any]]:
    fd, st = _open_file(fs, api_path)
    try:
        if st.st_size > MAX_READ_BYTES:
            raise ApiError(
                413,
                "ERR_PAYLOAD_TOO_LARGE",
                f"{api_path!r} is {st.st_size} bytes, over the {MAX_READ_BYTES} bytes that "
                "read_file answers: fetch it from /filesystem/download instead",
            )
        chunks: list[bytes] = []
        left = MAX_READ_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # grew while we read
            raise ApiError(
                413,
                "ERR_PAYLOAD_TOO_LARGE",
                f"{api_path!r} is over the {MAX_READ_BYTES} bytes that read_file answers: "
                "fetch it from /filesystem/download instead",
            )
        return b"".join(chunks), fs.entry_of(os.fstat(fd), fs.locate(api_path))
    finally:
        os.close(fd)


async def read_file(request: Request) -> Response:
    sandbox = live(request)
    path = request.query_params.get("path") or ""
    if not path:
        raise bad_request(f"path is required (a file below {HOME} or {TMP})")
    data, entry = await blocking(_read_small, sandbox.fs, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _CONTROL.isdisjoint(text):
        entry.update(content=text, encoding="utf-8")
    else:
        entry.update(content=base64.b64encode(data).decode("ascii"), encoding="base64")
    return json_response(request, entry)


def _write(fs: SandboxFS, order: WriteFileRequest, data: bytes, uid: int | None) -> dict[str, Any]:
    with fs.parent(order.path, create=order.create_dir, uid=uid) as (dir_fd, name):
        try:
            fd = os.open(name, _WRITE, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, order.path) from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise bad_request(f"{order.path!r} is not a regular file")
        if st.st_nlink > 1:
            raise bad_request(
                f"{order.path!r} has other hard links: the file API does not write through "
                "them (remove the file first)"
            )
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, order.mode)
        if uid is not None:
            os.fchown(fd, uid, uid)
        return fs.entry_of(os.fstat(fd), fs.locate(order.path))
    except OSError as exc:
        raise os_error(exc, order.path) from None
    finally:
        os.close(fd)


async def write_file(request: Request) -> Response:
    sandbox = live(request)
    core = core_of(request)
    order = WriteFileRequest.parse(await json_body(request))
    if order.encoding == "base64":
        try:
            data = base64.b64decode(order.content, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("content is not valid base64") from None
    else:
        data = order.content.encode("utf-8")
    limit = core.settings.max_upload_bytes
    if len(data) > limit:
        raise ApiError(
            413,
            "ERR_PAYLOAD_TOO_LARGE",
            f"file too large: {len(data)} bytes, over the limit of {limit} bytes",
        )
    sandbox.fs.locate(order.path)  # a bad path is a 400 before any disk work
    entry = await blocking(_write, sandbox.fs, order, data, core.uid_of(sandbox))
    return json_response(request, entry)


async def list_dir(request: Request) -> Response:
    sandbox = live(request)
    path = request.query_params.get("path") or HOME
    try:
        depth = max(1, int(request.query_params.get("depth") or 1))
    except ValueError:
        raise bad_request("depth must be an integer >= 1") from None
    if depth > MAX_DEPTH:
        raise bad_request(f"depth={depth} is too deep: at most {MAX_DEPTH}")
    fs = sandbox.fs
    if (await blocking(fs.stat_entry, path))["type"] != "directory":
        raise bad_request(f"path {path!r} is not a directory (a symbolic link is not followed)")
    entries = await blocking(fs.list_entries, path, depth)
    return json_response(request, {"path": fs.locate(path).api, "entries": entries})


async def stat(request: Request) -> Response:
    sandbox = live(request)
    entry = await blocking(sandbox.fs.stat_entry, request.query_params.get("path") or HOME)
    return json_response(request, {"entry": entry})


def _mkdir(fs: SandboxFS, path: str, order: MkdirRequest, uid: int | None) -> dict[str, Any]:
    where = fs.locate(path)
    if where.is_root:
        return fs.stat_entry(path)
    with fs.parent(path, create=order.parents, uid=uid) as (dir_fd, name):
        try:
            os.mkdir(name, order.mode, dir_fd=dir_fd)
            if uid is not None:
                os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise os_error(exc, path) from None
        st = fs.lstat_at(dir_fd, name, path)
    if not stat_mod.S_ISDIR(st.st_mode):
        raise ApiError(409, "ERR_CONFLICT", f"{path!r} exists and is not a directory")
    return fs.entry_of(st, where)


async def mkdir(request: Request) -> Response:
    sandbox = live(request)
    body = await json_body(request)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    order = MkdirRequest.parse(body)
    entry = await blocking(_mkdir, sandbox.fs, path, order, core_of(request).uid_of(sandbox))
    return json_response(request, {"entry": entry})


def _lstat_or_none(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _move(fs: SandboxFS, order: MoveRequest, uid: int | None) -> dict[str, Any]:
    """A rename, also between /home/user and /tmp: the two are sibling directories on the
    server's disk, so a rename between descriptors works (and stays race-free) there too."""
    src, dst = fs.locate(order.source), fs.locate(order.destination)
    if src.is_root:
        raise bad_request(f"cannot move {src.root.api} itself")
    if dst.is_root:  # into it, as `mv` does
        dst = dst.child(src.name)
    destination = dst.api
    with contextlib.ExitStack() as stack:
        src_dir, src_name = stack.enter_context(fs.parent(order.source))
        if _lstat_or_none(src_dir, src_name) is None:
            dst_dir, dst_name = stack.enter_context(fs.parent(destination))
            st = _lstat_or_none(dst_dir, dst_name)
            if st is not None:  # already moved: idempotent
                return fs.entry_of(st, dst)
            raise ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {order.source}")
        dst_dir, dst_name = stack.enter_context(fs.parent(destination, create=True, uid=uid))
        st = _lstat_or_none(dst_dir, dst_name)
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            # onto an existing directory: into it, under the source's name (as `mv` does)
            dst = dst.child(src_name)
            dst_dir = stack.enter_context(fs.open_dir(dst.up, destination))
            dst_name = src_name
        try:
            os.rename(src_name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        except OSError as exc:
            raise os_error(exc, destination) from None
        return fs.entry_of(fs.lstat_at(dst_dir, dst_name, destination), dst)


async def move(request: Request) -> Response:
    sandbox = live(request)
    order = MoveRequest.parse(await json_body(request))
    entry = await blocking(_move, sandbox.fs, order, core_of(request).uid_of(sandbox))
    return json_response(request, {"entry": entry})


def _remove(fs: SandboxFS, path: str) -> dict[str, Any] | None:
    where = fs.locate(path)
    if where.is_root:
        raise bad_request(f"cannot remove {where.root.api} itself")
    with fs.parent(path) as (dir_fd, name):
        st = _lstat_or_none(dir_fd, name)
        if st is None:
            return None
        entry = fs.entry_of(st, where)
        if not remove_tree(name, dir_fd=dir_fd):
            raise ApiError(
                500,
                "ERR_INTERNAL_SERVER_ERROR",
                f"could not remove all of {path}: part of it is left",
            )
    return entry


async def remove(request: Request) -> Response:
    sandbox = live(request)
    body = await json_body(request)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    entry = await blocking(_remove, sandbox.fs, path)
    if entry is None:
        return json_response(request, {"entry": None, "path": path, "removed": False})
    return json_response(request, {"entry": entry, "path": entry["path"], "removed": True})


async def upload(request: Request) -> Response:
    """The multipart form's file written to its place as it arrives.

    When the `path` field comes before the file (httpx, hence the official SDK and ours,
    send fields first) the bytes go straight into a temporary file beside the target;
    otherwise into an unnamed spool file, copied over once the form has ended. Either way
    the temporary file is renamed over the target only when the whole upload arrived.
    """
    sandbox = live(request)
    core = core_of(request)
    limit = core.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise ApiError(413, "ERR_PAYLOAD_TOO_LARGE", f"upload larger than {limit} bytes")
    boundary = boundary_of(request.headers.get("content-type", ""))
    if boundary is None:
        raise bad_request("multipart field 'file' is required")
    placing = _Placing(sandbox.fs, core.uid_of(sandbox), limit)
    body = request.stream()
    try:
        async with placing:
            reader = FormReader(boundary)
            async for chunk in body:
                for event in reader.feed(chunk):
                    await placing.take(event)
            reader.close()
            entry = await placing.finish()
    except ApiError:
        # An HTTP/1.1 client reads no answer while it is still sending: take the rest of
        # the body (BodyLimitMiddleware caps it) so that it gets this error, not a reset.
        with contextlib.suppress(Exception):
            async for _ in body:
                pass
        raise
    return json_response(request, entry)


class _Placing:
    """Where an upload's bytes go, decided as the form's parts arrive."""

    def __init__(self, fs: SandboxFS, uid: int | None, limit: int) -> None:
        self.fs = fs
        self.uid = uid
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_done = False
        self.size = 0
        self._stack = contextlib.ExitStack()
        self._placed: tuple[int, str, Location] | None = None  # dir fd, name, location
        self._sink: _Sink | None = None
        self._spool: _Sink | None = None  # an unnamed spool file, while the target is unknown

    async def __aenter__(self) -> _Placing:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            for sink in (self._sink, self._spool):
                if sink is not None:
                    await sink.settle(quietly=True)
        finally:
            for sink in (self._sink, self._spool):
                if sink is not None:
                    sink.discard()
            self._stack.close()

    def _target(self) -> str:
        target = self.fields.get("path") or self.fields.get("current_path")
        return target or f"{HOME}/{self.filename or 'upload'}"

    def _place(self) -> tuple[int, str, Location]:
        """The target's directory descriptor and name (into it if it is a directory)."""
        target = self._target()
        fs = self.fs
        where = fs.locate(target)
        if not where.is_root:
            dir_fd, name = self._stack.enter_context(fs.parent(target, create=True, uid=self.uid))
            st = _lstat_or_none(dir_fd, name)
        else:
            dir_fd, name, st = -1, "", os.stat(where.root.real)
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            # into an existing directory, under the upload's own file name
            name = os.path.basename(self.filename or "") or "upload"
            if name in (".", ".."):
                name = "upload"
            where = where.child(name)
            dir_fd = self._stack.enter_context(fs.open_dir(where.up, where.api))
        return dir_fd, name, where

    async def take(self, event: Field | FileStart | FileEnd | bytes) -> None:
        if isinstance(event, bytes):
            self.size += len(event)
            if self.size > self.limit:
                raise ApiError(
                    413, "ERR_PAYLOAD_TOO_LARGE", f"upload larger than {self.limit} bytes"
                )
            assert self._sink is not None
            await self._sink.write(event)
        elif isinstance(event, Field):
            if event.name == "path" and self._placed is not None:
                raise bad_request("multipart field 'path' is given more than once")
            self.fields[event.name] = event.value
        elif isinstance(event, FileStart):
            if event.name != "file":
                raise bad_request(
                    f"the upload's file is in field {event.name!r}: send it as field 'file'"
                )
            self.filename = event.filename
            if self.fields.get("path"):
                self._placed = self._place()
                dir_fd, name, where = self._placed
                self._sink = _Sink.beside(dir_fd, name, where.api)
            else:  # the target may still come: spool until the form ends
                self._spool = self._sink = _Sink(
                    _unnamed_file(), None, -1, "the upload's spool file"
                )
        else:
            assert self._sink is not None
            await self._sink.flush()
            self.file_done = True

    async def finish(self) -> dict[str, Any]:
        if not self.file_done:
            raise bad_request("multipart field 'file' is required")
        assert self._sink is not None
        if self._placed is None:
            self._placed = self._place()
            dir_fd, name, where = self._placed
            self._sink = _Sink.beside(dir_fd, name, where.api)
            assert self._spool is not None
            await blocking(_copy_fd, self._spool.fd, self._sink.fd, self.size)
        dir_fd, name, where = self._placed
        sink, self._sink = self._sink, None
        await blocking(sink.commit, self.uid)
        entry = self.fs.entry_of(self.fs.lstat_at(dir_fd, name, where.api), where)
        entry["size"] = self.size
        return entry


def _unnamed_file() -> int:
    """A spool file with no name (gone when closed), in the server's temporary directory."""
    handle = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - the descriptor outlives it
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


_FLUSH_BYTES = 1024 * 1024
"""Bytes gathered before one write in the thread pool (a thread hop per network chunk, some
64 KiB each, cost more than the writes themselves). One such write is in flight while the
next MiB arrives."""


class _Sink:
    """Buffered writes to a descriptor, run off the event loop; for an upload's temporary file
    beside its target, also the rename over the target."""

    def __init__(self, fd: int, tmp: str | None, dir_fd: int, api_path: str) -> None:
        self.fd = fd
        self._tmp = tmp
        self._dir_fd = dir_fd
        self._api_path = api_path
        self._name = ""
        self._pending: list[bytes] = []
        self._buffered = 0
        self._open = True
        #: the write running in the thread pool, if any: settled before the next one, and
        #: always before the descriptor is closed (a number closed under a running write
        #: could be reused by another open, which would then receive the bytes)
        self._writing: asyncio.Future[None] | None = None

    @classmethod
    def beside(cls, dir_fd: int, name: str, api_path: str) -> _Sink:
        """A new temporary file next to `name`, to be renamed over it by `commit`."""
        tmp = f".{name}.upload-{uuid.uuid4().hex[:8]}"[:255]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, api_path) from None
        sink = cls(fd, tmp, dir_fd, api_path)
        sink._name = name
        return sink

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._buffered += len(data)
        if self._buffered >= _FLUSH_BYTES:
            await self.settle()
            chunks, self._pending, self._buffered = self._pending, [], 0
            self._writing = asyncio.ensure_future(blocking(_write_all, self.fd, chunks))

    async def flush(self) -> None:
        """Write everything received so far, and wait for it."""
        await self.settle()
        if self._pending:
            chunks, self._pending, self._buffered = self._pending, [], 0
            try:
                await blocking(_write_all, self.fd, chunks)
            except OSError as exc:
                raise os_error(exc, self._api_path) from None

    async def settle(self, *, quietly: bool = False) -> None:
        """Wait for the write in flight; its error is raised unless `quietly` (the upload
        has failed already). Waits out a cancellation too, then passes it on."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        cancelled = False
        while not writing.done():
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                cancelled = True
            except OSError:
                break
        error = writing.exception()
        if cancelled:
            raise asyncio.CancelledError
        if isinstance(error, OSError) and not quietly:
            raise os_error(error, self._api_path) from None
        if error is not None and not isinstance(error, OSError) and not quietly:
            raise error

    def commit(self, uid: int | None) -> None:
        """Rename the complete temporary file over the target (in the thread pool)."""
        assert self._tmp is not None
        try:
            if uid is not None:
                os.fchown(self.fd, uid, uid)
            os.close(self.fd)
            self._open = False
            os.replace(self._tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            self.discard()
            raise os_error(exc, self._api_path) from None
        self._tmp = None

    def discard(self) -> None:
        """Close it and remove its temporary file, if still there (a failed upload)."""
        if self._open:
            self._open = False
            os.close(self.fd)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            self._tmp = None


def _write_all(fd: int, chunks: list[bytes]) -> None:
    if len(chunks) > 64:  # writev takes at most IOV_MAX (1024 on Linux) pieces
        chunks = [b"".join(chunks)]
    written = os.writev(fd, chunks)
    total = sum(len(c) for c in chunks)
    if written < total:  # a short write (a full disk says so on the next call): finish it
        view = memoryview(b"".join(chunks))[written:]
        while view:
            view = view[os.write(fd, view) :]


def _copy_fd(source: int, target: int, size: int) -> None:
    """The first `size` bytes of the spool into the target's temporary file."""
    offset = 0
    while offset < size and (chunk := os.pread(source, min(size - offset, 1 << 20), offset)):
        offset += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


async def download(request: Request) -> Response:
    sandbox = live(request)
    path = request.query_params.get("path") or ""
    if not path:
        raise bad_request(f"path is required (a file below {HOME} or {TMP})")
    fd, st = await blocking(_open_file, sandbox.fs, path)
    name = sandbox.fs.locate(path).name
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    quoted = quote(name)
    disposition = (
        f'attachment; filename="{name}"'
        if quoted == name
        else f"attachment; filename*=utf-8''{quoted}"
    )
    headers = {
        "content-disposition": disposition,
        "content-length": str(st.st_size),
        "x-acs-request-id": request_id(request),
    }
    return StreamingResponse(_chunks(fd, st.st_size), media_type=media, headers=headers)


async def _chunks(fd: int, size: int) -> AsyncIterator[bytes]:
    """The file's first `size` bytes (its size when opened), then close it."""
    try:
        left = size
        while left > 0 and (chunk := await blocking(os.read, fd, min(left, 1 << 20))):
            left -= len(chunk)
            yield chunk
        if left > 0:  # shrank while we sent it: keep the promised length
            yield b"\0" * left
    finally:
        os.close(fd)
