"""A sandbox's files: API paths mapped into its private directories.

The file API reaches two roots, the two directories a sandbox owns: `/home/user/...` (or
a relative path) is its workspace, `/tmp/...` its temporary directory. In the jail these
are what its code sees at the same paths. Without a jail its code sees the host's
directories at their host paths: the workspace is its working directory and `$HOME`, the
temporary directory is `$TMPDIR` (the host's own /tmp stays the host's). Other absolute
paths are refused: the cloud's container has them, the emulator does not.

Sandboxed code can change its files while the API works on them: a path checked one
moment may be a symlink to a host file the next. So the file API never opens a full
path: `SandboxFS.parent` walks from the path's root one component at a time with
`O_NOFOLLOW | O_DIRECTORY` (`openat`), and the routes act on the descriptors they got
(`fstat`, `fchmod`, `fchown`, `*at` calls on the final name, which is never followed).
A link anywhere in an API path is refused, not followed.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import stat as stat_mod
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from .._wire import DEFAULT_CWD
from ._errors import ApiError

__all__ = ["HOME", "MAX_ENTRIES", "TMP", "Location", "Root", "SandboxFS", "os_error"]

HOME = DEFAULT_CWD
TMP = "/tmp"  # noqa: S108 - the sandbox's own, a private directory (see the docstring)

# Linux's own limits (PATH_MAX, NAME_MAX); deeper trees than MAX_DEPTH are refused by the
# API so a request cannot build what the kernel's path walk (and Python's) cannot handle.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 256
MAX_ENTRIES = 100_000
"""A listing longer than this is refused (ask for less depth) instead of built."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def os_error(exc: OSError, api_path: str) -> ApiError:
    """An OSError as a 4xx that names the API path, never the server's real path."""
    shown = api_path if len(api_path) <= 80 else api_path[:60] + "..."
    if exc.errno == errno.ENOENT:
        return ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {shown}")
    if exc.errno == errno.ELOOP:
        return ApiError(
            400,
            "ERR_BAD_REQUEST",
            f"path {shown!r} goes through a symbolic link: the file API follows no links "
            "(one could lead outside the sandbox); use the link's target path",
        )
    if exc.errno == errno.ENOTDIR:
        return ApiError(409, "ERR_CONFLICT", f"a parent of {shown!r} is not a directory")
    if exc.errno == errno.EISDIR:
        return ApiError(400, "ERR_BAD_REQUEST", f"{shown!r} is a directory")
    if exc.errno == errno.EEXIST:
        return ApiError(409, "ERR_CONFLICT", f"{shown!r} already exists")
    if exc.errno == errno.ENOTEMPTY:
        return ApiError(409, "ERR_CONFLICT", f"{shown!r} is a directory that is not empty")
    if exc.errno == errno.ENAMETOOLONG:
        return ApiError(400, "ERR_BAD_REQUEST", f"path {shown!r} is too long")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ApiError(403, "ERR_FORBIDDEN", f"permission denied: {shown}")
    if exc.errno == errno.ENOSPC:
        return ApiError(507, "ERR_INSUFFICIENT_STORAGE", f"no space left writing {shown}")
    if exc.errno == errno.EXDEV:  # the two roots are siblings on one filesystem, so not seen
        return ApiError(
            400, "ERR_BAD_REQUEST", f"cannot move {shown!r} to another filesystem: copy it"
        )
    name = errno.errorcode.get(exc.errno or 0, "error")
    return ApiError(400, "ERR_BAD_REQUEST", f"cannot use {shown!r}: {name} ({exc.strerror})")


def _name(fn: Any, ident: int) -> str:
    try:
        return str(fn(ident)[0])
    except KeyError:
        return "user" if ident else "root"


def _check_bounds(api_path: str, parts: tuple[str, ...]) -> None:
    shown = api_path if len(api_path) <= 80 else api_path[:60] + "..."
    if len(api_path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ApiError(
            400, "ERR_BAD_REQUEST", f"path {shown!r} is longer than {MAX_PATH_BYTES} bytes"
        )
    if len(parts) > MAX_DEPTH:
        raise ApiError(
            400,
            "ERR_BAD_REQUEST",
            f"path {shown!r} is {len(parts)} levels deep: at most {MAX_DEPTH} are allowed",
        )
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ApiError(
                400,
                "ERR_BAD_REQUEST",
                f"a name in path {shown!r} is longer than {MAX_NAME_BYTES} bytes",
            )


@attrs.frozen
class Root:
    """One directory the file API reaches: its API path and where it is on the host."""

    api: str
    real: Path

    @property
    def name(self) -> str:
        return self.api.rsplit("/", 1)[-1]


@attrs.frozen
class Location:
    """A checked API path: its root and the components below it (() is the root itself)."""

    root: Root
    parts: tuple[str, ...]

    @property
    def api(self) -> str:
        """The path as the API shows it (`/tmp/a`, `/home/user/b`)."""
        return "/".join((self.root.api, *self.parts))

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else self.root.name

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def up(self) -> Location:
        """The directory holding this one (the root for a root)."""
        return Location(self.root, self.parts[:-1])

    def child(self, name: str) -> Location:
        return Location(self.root, (*self.parts, name))


class SandboxFS:
    """The file API's view of one sandbox: `/home/user` is `home`, `/tmp` is `tmp`."""

    def __init__(self, home: Path, tmp: Path) -> None:
        self.home = Root(HOME, home.resolve())
        self.tmp = Root(TMP, tmp.resolve())
        self.roots = (self.home, self.tmp)

    def locate(self, api_path: str | None) -> Location:
        """An API path as its root and checked components (relative paths are below
        /home/user); 400 for a path outside both roots, with `..`, or out of bounds."""
        if not api_path:
            api_path = HOME
        if "\x00" in api_path:
            raise ApiError(400, "ERR_BAD_REQUEST", "path contains a NUL byte")
        root, rel = self.home, api_path
        if api_path.startswith("/"):
            for candidate in self.roots:
                if api_path == candidate.api or api_path.startswith(candidate.api + "/"):
                    root, rel = candidate, api_path[len(candidate.api) :]
                    break
            else:
                raise ApiError(
                    400,
                    "ERR_BAD_REQUEST",
                    f"path {api_path!r} is outside {HOME} and {TMP}: the local emulator only "
                    f"has the sandbox's home and temporary directories (use {HOME}/..., "
                    f"{TMP}/... or a path relative to {HOME})",
                )
        parts = tuple(p for p in rel.split("/") if p not in ("", "."))
        if ".." in parts:
            raise ApiError(400, "ERR_BAD_REQUEST", f"path {api_path!r} may not contain '..'")
        _check_bounds(api_path, parts)
        return Location(root, parts)

    @contextlib.contextmanager
    def open_dir(
        self,
        where: Location,
        api_path: str,
        *,
        create: bool = False,
        uid: int | None = None,
        mode: int = 0o755,
    ) -> Iterator[int]:
        """A descriptor of the directory `where`, opened one component at a time from its
        root without following a link; missing directories are made when `create`."""
        try:
            fd = os.open(where.root.real, _DIR_FLAGS)
        except OSError as exc:
            raise os_error(exc, api_path) from None
        try:
            for name in where.parts:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except NotADirectoryError:
                    if _is_link(name, fd):  # O_NOFOLLOW | O_DIRECTORY on a link: ENOTDIR
                        raise OSError(errno.ELOOP, "a symbolic link") from None
                    raise
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, mode, dir_fd=fd)
                        if uid is not None:
                            os.chown(name, uid, uid, dir_fd=fd, follow_symlinks=False)
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            raise os_error(exc, api_path) from None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def parent(
        self, api_path: str | None, *, create: bool = False, uid: int | None = None
    ) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, final name) of a path that is not a root."""
        where = self.locate(api_path)
        if where.is_root:
            raise ApiError(
                400,
                "ERR_BAD_REQUEST",
                f"this needs a path below {where.root.api}, not {where.root.api} itself",
            )
        with self.open_dir(where.up, api_path or HOME, create=create, uid=uid) as fd:
            yield fd, where.name

    def lstat_at(self, dir_fd: int, name: str, api_path: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise os_error(exc, api_path) from None

    def entry_of(self, st: os.stat_result, where: Location) -> dict[str, Any]:
        """The API's entry for a file whose lstat is `st`."""
        return _entry(st, where.name, where.api)

    def stat_entry(self, api_path: str | None) -> dict[str, Any]:
        """The entry of a path, found without following any link."""
        where = self.locate(api_path)
        if where.is_root:
            with self.open_dir(where, where.api) as fd:
                return self.entry_of(os.fstat(fd), where)
        with self.parent(api_path) as (fd, name):
            return self.entry_of(self.lstat_at(fd, name, api_path or HOME), where)

    def list_entries(self, api_path: str, depth: int) -> list[dict[str, Any]]:
        """Entries below a directory, depth first, `depth` levels down; links are listed,
        never entered. Blocking: call it off the event loop."""
        where = self.locate(api_path)
        out: list[dict[str, Any]] = []
        with self.open_dir(where, api_path) as top:
            frames = [_Frame(os.dup(top), where, depth)]
            try:
                while frames:
                    frame = frames[-1]
                    entry = next(frame.entries, None)
                    if entry is None:
                        os.close(frames.pop().fd)
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we listed
                    if len(out) >= MAX_ENTRIES:
                        raise ApiError(
                            400,
                            "ERR_BAD_REQUEST",
                            f"the listing has more than {MAX_ENTRIES} entries: ask for less "
                            "depth or list a subdirectory",
                        )
                    below = frame.where.child(entry.name)
                    out.append(self.entry_of(st, below))
                    if frame.left > 1 and stat_mod.S_ISDIR(st.st_mode):
                        try:
                            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=frame.fd)
                            frames.append(_Frame(fd, below, frame.left - 1))
                        except OSError:
                            continue  # replaced or closed meanwhile: listed, not entered
            finally:
                for frame in frames:
                    os.close(frame.fd)
        return out

    def resolve(self, api_path: str | None, *, must_exist: bool = False) -> Path:
        """Map an API path to a real path inside the sandbox, refusing every escape.

        Only for what runs as the sandbox (a kernel's or command's working directory):
        the file API itself goes through `parent`/`open_dir` instead. A link may lead from
        one of the sandbox's roots into the other: both are its own."""
        where = self.locate(api_path)
        api_path = api_path or HOME
        candidate = where.root.real.joinpath(*where.parts)
        # Resolve symlinks of every existing component: a link pointing out is an escape.
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before 3.13)
            raise ApiError(
                400, "ERR_BAD_REQUEST", f"path {api_path!r} goes through a symbolic link loop"
            ) from None
        if not any(real == r.real or r.real in real.parents for r in self.roots):
            raise ApiError(400, "ERR_BAD_REQUEST", f"path {api_path!r} escapes the sandbox")
        if must_exist and not os.path.lexists(candidate):
            raise ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {api_path}")
        return candidate

    def api_path(self, real: Path) -> str:
        """The API path of a host path inside one of the roots (ValueError elsewhere)."""
        for root in self.roots:
            if real == root.real or root.real in real.parents:
                return Location(root, real.relative_to(root.real).parts).api
        raise ValueError(f"{real} is in neither of the sandbox's directories")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat_mod.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class _Frame:
    """One open directory of a listing and its entries still to visit, sorted by name."""

    def __init__(self, fd: int, where: Location, left: int) -> None:
        self.fd = fd
        self.where = where
        self.left = left
        try:
            with os.scandir(fd) as it:
                self.entries = iter(sorted(it, key=lambda e: e.name))
        except OSError:
            os.close(fd)
            raise


def _entry(st: os.stat_result, name: str, api_path: str) -> dict[str, Any]:
    if stat_mod.S_ISDIR(st.st_mode):
        kind = "directory"
    elif stat_mod.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat_mod.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    mode = stat_mod.S_IMODE(st.st_mode)
    return {
        "name": name,
        "type": kind,
        "path": api_path,
        "size": st.st_size,
        "mode": mode,
        "permissions": stat_mod.filemode(st.st_mode),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "modifiedTime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
    }
