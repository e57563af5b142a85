"""`sandbox.files` for `Sandbox`: the sync twin of `AsyncFilesystem`.

Where E2B's sync API differs from its async one, this follows E2B: `watch_dir`
takes no callbacks and returns a `WatchHandle` to ask for new events, and
`read(format="stream")` returns a plain iterator (`FileStreamReader`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import IO, Literal, overload

from . import _filesystem as fs
from ._async_filesystem import AsyncFileStreamReader
from ._async_sandbox import AsyncSandbox
from ._errors import SandboxException
from ._filesystem import EntryInfo, FilesystemEvent, WriteEntry, WriteInfo
from ._portal import call as _call

__all__ = ["FileStreamReader", "Filesystem", "WatchHandle"]


class FileStreamReader(Iterator[bytes]):
    """`files.read(path, format="stream")`: the file's bytes, chunk by chunk.

    Use it as `with`, read it to the end, or call `close()`: each of these ends
    the download.
    """

    def __init__(self, inner: AsyncFileStreamReader) -> None:
        self._inner = inner

    def __iter__(self) -> FileStreamReader:
        return self

    def __next__(self) -> bytes:
        try:
            return _call(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """End the download (safe to call more than once)."""
        _call(self._inner.aclose())

    def __enter__(self) -> FileStreamReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WatchHandle:
    """What `watch_dir` returns: `get_new_events()` lists what changed since the last call.

    Each call lists the directory and compares it with the last listing (AgentRun
    has no file events), so nothing runs between calls.
    """

    def __init__(
        self,
        sandbox: AsyncSandbox,
        root: str,
        depth: int,
        baseline: fs.Snapshot,
        include_entry: bool = False,
    ) -> None:
        self._files = sandbox.files
        self._include_entry = include_entry
        self._root = root
        self._depth = depth
        self._snapshot = baseline
        self._closed = False

    def get_new_events(self, request_timeout: float | None = None) -> list[FilesystemEvent]:
        """The changes since the watch started or since the last call."""
        if self._closed:
            raise SandboxException("The watcher is already stopped")
        snapshot, entries = _call(
            self._files._snapshot(
                self._root,
                self._depth,
                with_entries=self._include_entry,
                opts={"request_timeout": request_timeout},
            )
        )
        old, self._snapshot = self._snapshot, snapshot
        return list(fs.diff(self._root, old, snapshot, entries))

    def stop(self, request_timeout: float | None = None) -> None:
        """Stop watching: `get_new_events()` raises from now on."""
        self._closed = True


class Filesystem:
    """`sandbox.files` (sync): read, write, list, exists, get_info, remove, rename, make_dir,
    watch_dir."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox
        self._files = sandbox.files

    @overload
    def read(
        self,
        path: str,
        format: Literal["text"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["bytes"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> bytearray: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["stream"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> FileStreamReader: ...

    def read(
        self,
        path: str,
        format: Literal["text", "bytes", "stream"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str | bytearray | FileStreamReader:
        """The file as text, as a `bytearray`, or as a `FileStreamReader` of chunks
        (see `AsyncFilesystem.read`)."""
        got = _call(
            self._files._read(path, format, user, request_timeout, gzip, stream_idle_timeout)
        )
        if isinstance(got, AsyncFileStreamReader):
            return FileStreamReader(got)
        return got

    def write(
        self,
        path: str,
        data: str | bytes | IO[str] | IO[bytes],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        use_octet_stream: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteInfo:
        """Write a file (created with its parents, or overwritten); see `write_files`."""
        return _call(
            self._files.write(path, data, user, request_timeout, gzip, use_octet_stream, metadata)
        )

    def write_files(
        self,
        files: builtins.list[WriteEntry],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        use_octet_stream: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> builtins.list[WriteInfo]:
        """Write several files (see `AsyncFilesystem.write_files`)."""
        return _call(
            self._files.write_files(files, user, request_timeout, gzip, use_octet_stream, metadata)
        )

    def list(
        self,
        path: str,
        depth: int | None = 1,
        user: str | None = None,
        request_timeout: float | None = None,
    ) -> builtins.list[EntryInfo]:
        """The entries below a directory, `depth` levels down (links are listed, not entered)."""
        return _call(self._files.list(path, depth, user, request_timeout))

    def get_info(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> EntryInfo:
        """A file's or directory's details (a link: its target's type and `symlink_target`)."""
        return _call(self._files.get_info(path, user, request_timeout))

    def exists(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> bool:
        """Is there a file or directory at `path`?"""
        return _call(self._files.exists(path, user, request_timeout))

    def remove(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> None:
        """Remove a file or a directory with its contents (no error if it is not there)."""
        _call(self._files.remove(path, user, request_timeout))

    def rename(
        self,
        old_path: str,
        new_path: str,
        user: str | None = None,
        request_timeout: float | None = None,
    ) -> EntryInfo:
        """Move a file or directory; its metadata moves with it."""
        return _call(self._files.rename(old_path, new_path, user, request_timeout))

    def make_dir(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> bool:
        """Create a directory and its parents; False if it was already there."""
        return _call(self._files.make_dir(path, user, request_timeout))

    def watch_dir(
        self,
        path: str,
        user: str | None = None,
        request_timeout: float | None = None,
        recursive: bool = False,
        include_entry: bool = False,
        allow_network_mounts: bool = False,
    ) -> WatchHandle:
        """Watch a directory: `handle.get_new_events()` lists the changes since the last call.

        Changes are found by comparing listings (see `AsyncFilesystem.watch_dir`).
        `recursive` watches 32 levels down.
        """
        self._files._check_watch(user, recursive, include_entry, allow_network_mounts)
        root, depth, baseline = _call(self._files._start_watch(path, recursive, request_timeout))
        return WatchHandle(self._sandbox, root, depth, baseline, include_entry)
