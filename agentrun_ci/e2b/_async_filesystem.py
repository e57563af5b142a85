"""`sandbox.files` for `AsyncSandbox`: E2B's filesystem API on the data plane's file calls.

| E2B                          | AgentRun                                                   |
|------------------------------|------------------------------------------------------------|
| `read` text / bytes          | `GET /files` (over its size cap: `/filesystem/download`)   |
| `read(format="stream")`      | `GET /filesystem/download`, streamed                       |
| `write`, `write_files`       | `POST /files` (a file object is read first)                |
| `list`, `get_info`, `exists` | `GET /filesystem`, `GET /filesystem/stat`                  |
| `make_dir`, `rename`, `remove` | `POST /filesystem/mkdir`, `/move`, `/remove`             |
| `metadata`, link targets     | `user.e2b.*` xattrs, read and set by a `/processes/cmd`    |
| `watch_dir`                  | `GET /filesystem` polled, listings compared                |
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from .._errors import AgentRunError, APIError, NotFoundError
from .._models import FileEntry
from .._wire import EXECUTE_TIMEOUT_CAP
from . import _filesystem as fs
from ._common import maybe_await
from ._errors import (
    FileNotFoundException,
    InvalidArgumentException,
    SandboxException,
    TimeoutException,
)
from ._filesystem import EntryInfo, FilesystemEvent, WriteEntry, WriteInfo

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncFileStreamReader", "AsyncFilesystem", "AsyncWatchHandle"]

log = logging.getLogger("agentrun_ci.e2b")
T = TypeVar("T")

#: how often an async watch lists the directory
POLL_INTERVAL = 0.2
#: how deep a recursive watch looks
WATCH_DEPTH = 32


def _check_user(user: str | None) -> None:
    if user not in (None, "user"):
        raise InvalidArgumentException(
            f"user={user!r}: AgentRun's file calls act as the sandbox's only user ('user')"
        )


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentException(f"{name} must be True or False, got {value!r}")


def _writer(path: str, data: str | bytes) -> Callable[[Any, str], Awaitable[FileEntry]]:
    return lambda d, sid: d.write_file(sid, path, data)


async def _file_errors(awaitable: Awaitable[T]) -> T:
    """A 404 from a file call as E2B's FileNotFoundException (still a NotFoundException)."""
    try:
        return await awaitable
    except NotFoundError as exc:
        if isinstance(exc, FileNotFoundException):
            raise
        raise FileNotFoundException(
            exc.message,
            status_code=exc.status_code,
            code=exc.code,
            request_id=exc.request_id,
            body=exc.body,
        ) from exc


class AsyncFileStreamReader(AsyncIterator[bytes]):
    """`await files.read(path, format="stream")`: the file's bytes, chunk by chunk.

    Use it as `async with`, read it to the end, or call `aclose()`: each of these
    ends the download.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], first: bytes | None, idle_timeout: float | None
    ) -> None:
        self._chunks = chunks
        self._first = first
        self._idle = idle_timeout or None
        self._closed = first is None

    def __aiter__(self) -> AsyncFileStreamReader:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._closed:
            raise StopAsyncIteration
        try:
            step = self._chunks.__anext__()
            if self._idle:
                try:
                    return await asyncio.wait_for(step, self._idle)
                except asyncio.TimeoutError:
                    raise TimeoutException(
                        f"no data for {self._idle:g} s (stream_idle_timeout) while streaming "
                        "the file"
                    ) from None
            return await step
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """End the download (safe to call more than once)."""
        self._first = None
        if not self._closed:
            self._closed = True
            closer = getattr(self._chunks, "aclose", None)
            if closer is not None:
                await closer()

    async def __aenter__(self) -> AsyncFileStreamReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncWatchHandle:
    """What `watch_dir` returns: events go to `on_event` until `await handle.stop()`.

    AgentRun has no file events: the handle lists the directory every
    `poll_interval` seconds and reports the differences (see `diff` in
    `_filesystem`). The polling ends on `stop()`, at the watch's `timeout`, when
    the sandbox is killed, or when a poll fails; `on_exit` is then called once,
    with the error or None.
    """

    def __init__(
        self,
        files: AsyncFilesystem,
        root: str,
        depth: int,
        baseline: fs.Snapshot,
        on_event: Callable[[FilesystemEvent], Any],
        on_exit: Callable[[Exception | None], Any] | None,
        *,
        include_entry: bool,
        timeout: float | None,
        poll_interval: float,
    ) -> None:
        self._files = files
        self._root = root
        self._depth = depth
        self._snapshot = baseline
        self._on_event = on_event
        self._on_exit = on_exit
        self._include_entry = include_entry
        self._timeout = timeout
        self._interval = poll_interval
        self._started = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching (on_exit is called with None)."""
        self._cancel()
        await asyncio.wait([self._task])

    def _cancel(self) -> None:
        self._stopping = True
        self._wake.set()
        # a task cancelled before its first step would never run its on_exit: it sees
        # _stopping instead
        if self._started:
            self._task.cancel()

    async def _watch(self) -> None:
        self._started = True
        error: Exception | None = None
        try:
            await self._poll()
        except asyncio.CancelledError:
            await self._exit(None)
            raise
        except Exception as exc:
            error = exc
        await self._exit(error)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        end = None if self._timeout is None else loop.time() + self._timeout
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._stopping:
                return
            if end is not None and loop.time() >= end:
                raise TimeoutException(f"the watch reached its timeout of {self._timeout:g} s")
            snapshot, entries = await self._files._snapshot(
                self._root, self._depth, with_entries=self._include_entry
            )
            old, self._snapshot = self._snapshot, snapshot
            for event in fs.diff(self._root, old, snapshot, entries):
                await maybe_await(self._on_event(event))

    async def _exit(self, error: Exception | None) -> None:
        self._files._watches.discard(self)
        if self._on_exit is None:
            return
        try:
            await maybe_await(self._on_exit(error))
        except Exception:  # nowhere to raise it from a background task
            log.exception("watch_dir on_exit callback failed")


class AsyncFilesystem:
    """`sandbox.files`: read, write, list, exists, get_info, remove, rename, make_dir, watch_dir.

    Relative paths start at /home/user, as in E2B. `user` may only be the
    sandbox's one user. `request_timeout` bounds each call.
    """

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox
        self._watches: set[AsyncWatchHandle] = set()
        # paths this handle gave metadata: a later write without metadata clears it there
        self._tagged: set[str] = set()

    # ------------------------------------------------------------ reading

    @overload
    async def read(
        self,
        path: str,
        format: Literal["text"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str: ...

    @overload
    async def read(
        self,
        path: str,
        format: Literal["bytes"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> bytearray: ...

    @overload
    async def read(
        self,
        path: str,
        format: Literal["stream"],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> AsyncFileStreamReader: ...

    async def read(
        self,
        path: str,
        format: Literal["text", "bytes", "stream"] = "text",
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        stream_idle_timeout: float | None = None,
    ) -> str | bytearray | AsyncFileStreamReader:
        """The file as text, as a `bytearray`, or as an `AsyncFileStreamReader` of chunks.

        `gzip` is accepted for E2B's sake and changes nothing: it picks E2B's
        transfer encoding, and the download here already asks for gzip (httpx
        does) while the bytes read are the file's own either way.
        `stream_idle_timeout` (stream only) ends a download that sends nothing
        for that many seconds; `request_timeout` bounds the start of a stream.
        """
        return await self._read(path, format, user, request_timeout, gzip, stream_idle_timeout)

    async def _read(
        self,
        path: str,
        format: str,
        user: str | None,
        request_timeout: float | None,
        gzip: bool,
        stream_idle_timeout: float | None,
    ) -> str | bytearray | AsyncFileStreamReader:
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentException(f"format={format!r}: use 'text', 'bytes' or 'stream'")
        _check_user(user)
        _check_flag("gzip", gzip)
        opts = {"request_timeout": request_timeout}
        if format == "stream":
            return await self._open_stream(path, opts, stream_idle_timeout)
        try:
            content = await self._call(lambda d, sid: d.read_file(sid, path), opts)
            data = content.content
        except APIError as exc:
            if exc.status_code != 413:
                raise
            # over read_file's size cap: the download route has none
            data = b"".join([c async for c in await self._open_stream(path, opts, None)])
        return data.decode("utf-8", errors="replace") if format == "text" else bytearray(data)

    async def _open_stream(
        self, path: str, opts: dict[str, Any], idle: float | None
    ) -> AsyncFileStreamReader:
        chunks: AsyncGenerator[bytes, None] | None = None

        async def first(data_plane: Any, sandbox_id: str) -> bytes | None:
            # the first step sends the request: a missing file raises here, in read()
            nonlocal chunks
            started: AsyncGenerator[bytes, None] = data_plane.iter_download(sandbox_id, path)
            chunks = started
            try:
                return await started.__anext__()
            except StopAsyncIteration:
                return None

        try:
            head = await self._call(first, opts)
        except BaseException:
            if chunks is not None:
                await chunks.aclose()
            raise
        assert chunks is not None
        return AsyncFileStreamReader(chunks, head, idle)

    # ------------------------------------------------------------ writing

    async def write(
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
        infos = await self.write_files(
            [WriteEntry(path=path, data=data)],
            user,
            request_timeout,
            gzip,
            use_octet_stream,
            metadata,
        )
        if len(infos) != 1:
            raise SandboxException("Received unexpected response from write operation")
        return infos[0]

    async def write_files(
        self,
        files: builtins.list[WriteEntry],
        user: str | None = None,
        request_timeout: float | None = None,
        gzip: bool = False,
        use_octet_stream: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> builtins.list[WriteInfo]:
        """Write several files (`[WriteEntry(path=..., data=...)]`, data str, bytes or a
        file object); missing parent directories are made.

        `gzip` and `use_octet_stream` pick how E2B's SDK sends the bytes
        (compressed; raw body instead of multipart). AgentRun's write call has one
        form, so both are accepted and change nothing: the file holds exactly the
        data given. A file object is read to its end first (AgentRun's write call
        takes the whole content). `metadata` (the same for every file) is stored
        as the files' `user.e2b.*` extended attributes, as in E2B; writing a file
        again without metadata clears what this handle set on it.
        """
        _check_user(user)
        _check_flag("gzip", gzip)
        if use_octet_stream is not None:
            _check_flag("use_octet_stream", use_octet_stream)
        meta = fs.check_metadata(metadata)
        if not files:
            return []
        opts = {"request_timeout": request_timeout}
        payloads = [(entry["path"], fs.payload(entry["data"], entry["path"])) for entry in files]
        infos: builtins.list[WriteInfo] = []
        for path, data in payloads:
            written: FileEntry = await self._call(_writer(path, data), opts)
            full = written.path or fs.absolute(path)
            infos.append(
                WriteInfo(
                    name=full.rstrip("/").rsplit("/", 1)[-1],
                    type=fs.FileType.FILE,
                    path=full,
                    metadata=dict(meta) if meta else None,
                )
            )
        paths = [info.path for info in infos]
        stale = [p for p in paths if p in self._tagged]
        if meta or stale:
            await self._set_metadata(paths if meta else stale, meta or {}, opts)
        if meta:
            self._tagged.update(paths)
        else:
            self._tagged.difference_update(paths)
        return infos

    async def _set_metadata(
        self, paths: builtins.list[str], meta: dict[str, str], opts: dict[str, Any]
    ) -> None:
        command = fs.set_command(paths, meta)
        result = await self._call(
            lambda d, sid: d.run_command(sid, command, timeout=EXECUTE_TIMEOUT_CAP),
            opts,
            work=EXECUTE_TIMEOUT_CAP,
        )
        if result.exit_code != 0:
            raise SandboxException(
                f"could not store the file metadata as user.e2b.* extended attributes "
                f"(exit code {result.exit_code}): {result.stderr.strip()[-500:]}; the "
                "sandbox needs python3 and a filesystem with user xattrs"
            )

    # ------------------------------------------------------------ describing

    async def _probe(self, root: str, depth: int, opts: dict[str, Any]) -> dict[str, Any]:
        """Metadata and link targets under `root` (see _in_sandbox); {} when unavailable."""
        command = fs.info_command(root, depth)
        try:
            result = await self._call(
                lambda d, sid: d.run_command(sid, command, timeout=EXECUTE_TIMEOUT_CAP),
                opts,
                work=EXECUTE_TIMEOUT_CAP,
            )
        except AgentRunError as exc:
            if self._sbx._killed:
                raise
            log.debug("file metadata probe failed: %s", exc)
            return {}
        if result.exit_code != 0:
            log.debug("file metadata probe exited %s: %s", result.exit_code, result.stderr)
            return {}
        try:
            found = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}
        return found if isinstance(found, dict) else {}

    async def _with_probe(
        self, main: Awaitable[T], root: str, depth: int, opts: dict[str, Any]
    ) -> tuple[T, dict[str, Any]]:
        """`main` and the probe side by side; the probe is cancelled if `main` fails."""
        probe = asyncio.ensure_future(self._probe(root, depth, opts))
        try:
            value = await main
        except BaseException:
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe
            raise
        return value, await probe

    async def list(
        self,
        path: str,
        depth: int | None = 1,
        user: str | None = None,
        request_timeout: float | None = None,
    ) -> builtins.list[EntryInfo]:
        """The entries below a directory, `depth` levels down (links are listed, not entered)."""
        if depth is not None and (isinstance(depth, bool) or depth < 1):
            raise InvalidArgumentException("depth should be at least 1")
        _check_user(user)
        levels = depth or 1
        opts = {"request_timeout": request_timeout}
        listing: builtins.list[FileEntry]
        listing, found = await self._with_probe(
            self._call(lambda d, sid: d.list_files(sid, path, depth=levels), opts),
            fs.absolute(path),
            levels,
            opts,
        )
        out = [fs.entry_info(e, found.get(e.path)) for e in listing]
        return [e for e in out if e.type is not None]

    async def get_info(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> EntryInfo:
        """A file's or directory's details (a link: its target's type and `symlink_target`)."""
        _check_user(user)
        opts = {"request_timeout": request_timeout}
        entry: FileEntry
        entry, found = await self._with_probe(
            self._call(lambda d, sid: d.stat(sid, path), opts), fs.absolute(path), 0, opts
        )
        return fs.entry_info(entry, found.get(entry.path) or found.get(fs.absolute(path)))

    async def exists(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> bool:
        """Is there a file or directory at `path`?"""
        _check_user(user)
        try:
            await self._call(lambda d, sid: d.stat(sid, path), {"request_timeout": request_timeout})
        except NotFoundError:
            return False
        return True

    # ------------------------------------------------------------ changing

    async def remove(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> None:
        """Remove a file or a directory with its contents (no error if it is not there)."""
        _check_user(user)
        await self._call(lambda d, sid: d.remove(sid, path), {"request_timeout": request_timeout})
        gone = fs.absolute(path)
        self._tagged = {p for p in self._tagged if p != gone and not p.startswith(gone + "/")}

    async def rename(
        self,
        old_path: str,
        new_path: str,
        user: str | None = None,
        request_timeout: float | None = None,
    ) -> EntryInfo:
        """Move a file or directory; its metadata moves with it."""
        _check_user(user)
        opts = {"request_timeout": request_timeout}
        moved: FileEntry = await self._call(lambda d, sid: d.move(sid, old_path, new_path), opts)
        old = fs.absolute(old_path)
        self._tagged = {
            moved.path + p[len(old) :] if p == old or p.startswith(old + "/") else p
            for p in self._tagged
        }
        found = await self._probe(moved.path, 0, opts)
        return fs.entry_info(moved, found.get(moved.path))

    async def make_dir(
        self, path: str, user: str | None = None, request_timeout: float | None = None
    ) -> bool:
        """Create a directory and its parents; False if it was already there."""
        _check_user(user)
        opts = {"request_timeout": request_timeout}
        if await self.exists(path, user, request_timeout):
            return False
        await self._call(lambda d, sid: d.mkdir(sid, path), opts)
        return True

    # ------------------------------------------------------------ watching

    async def watch_dir(
        self,
        path: str,
        on_event: Callable[[FilesystemEvent], Any],
        on_exit: Callable[[Exception | None], Any] | None = None,
        user: str | None = None,
        request_timeout: float | None = None,
        timeout: float | None = 60,
        recursive: bool = False,
        include_entry: bool = False,
        allow_network_mounts: bool = False,
        *,
        poll_interval: float = POLL_INTERVAL,
    ) -> AsyncWatchHandle:
        """Call `on_event` (a function or coroutine) for each change in a directory.

        AgentRun has no file events: the directory is listed every
        `poll_interval` seconds (ours; default 0.2) and compared with the last
        listing, so a change undone between two polls is not seen, and the events
        for a new entry are E2B's for one written through its SDK (CREATE, CHMOD,
        WRITE). `recursive` watches 32 levels down. `timeout` (default 60 s, 0 = no
        limit) ends the watch; `on_exit` gets the error that ended it, or None.
        `allow_network_mounts` is accepted (a listing works on any mount).
        """
        self._check_watch(user, recursive, include_entry, allow_network_mounts)
        if not (isinstance(poll_interval, int | float) and poll_interval > 0):
            raise InvalidArgumentException(
                f"poll_interval must be seconds > 0, got {poll_interval!r}"
            )
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise InvalidArgumentException(f"timeout must be seconds >= 0, got {timeout!r}")
        root, depth, baseline = await self._start_watch(path, recursive, request_timeout)
        handle = AsyncWatchHandle(
            self,
            root,
            depth,
            baseline,
            on_event,
            on_exit,
            include_entry=include_entry,
            timeout=float(timeout) if timeout else None,
            poll_interval=float(poll_interval),
        )
        self._watches.add(handle)
        return handle

    @staticmethod
    def _check_watch(
        user: str | None, recursive: bool, include_entry: bool, allow_network_mounts: bool
    ) -> None:
        _check_user(user)
        for name, flag in (
            ("recursive", recursive),
            ("include_entry", include_entry),
            ("allow_network_mounts", allow_network_mounts),
        ):
            _check_flag(name, flag)

    async def _start_watch(
        self, path: str, recursive: bool, request_timeout: float | None
    ) -> tuple[str, int, fs.Snapshot]:
        """Check `path` is a directory; its first listing."""
        opts = {"request_timeout": request_timeout}
        entry: FileEntry = await self._call(lambda d, sid: d.stat(sid, path), opts)
        if fs.entry_info(entry).type is not fs.FileType.DIR:
            raise InvalidArgumentException(
                f"watch_dir({path!r}): {entry.path or path} is not a directory; watch the "
                "directory that holds it"
            )
        root = entry.path or fs.absolute(path)
        depth = WATCH_DEPTH if recursive else 1
        baseline, _ = await self._snapshot(root, depth, with_entries=False, opts=opts)
        return root, depth, baseline

    async def _snapshot(
        self,
        root: str,
        depth: int,
        *,
        with_entries: bool,
        opts: dict[str, Any] | None = None,
    ) -> tuple[fs.Snapshot, dict[str, FileEntry] | None]:
        try:
            listing: builtins.list[FileEntry] = await self._call(
                lambda d, sid: d.list_files(sid, root, depth=depth), opts or {}
            )
        except FileNotFoundException:
            listing = []  # the directory is gone: everything in it was removed
        entries = {e.path: e for e in listing} if with_entries else None
        return fs.snapshot(listing), entries

    def _stop_watches(self) -> None:
        """End every watch's polling now (the sandbox was killed)."""
        for handle in list(self._watches):
            handle._cancel()

    # ------------------------------------------------------------ plumbing

    async def _call(
        self,
        action: Callable[[Any, str], Awaitable[Any]],
        opts: dict[str, Any],
        work: float = 0.0,
    ) -> Any:
        return await _file_errors(self._sbx._call(action, opts, work))
