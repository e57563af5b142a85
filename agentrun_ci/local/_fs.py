"""A sandbox's files: API paths (`/home/user/...` or relative) mapped into its private directory."""

from __future__ import annotations

import grp
import os
import pwd
import stat as stat_mod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._wire import DEFAULT_CWD
from ._errors import ApiError

__all__ = ["HOME", "SandboxFS"]

HOME = DEFAULT_CWD

# Linux's own limits (PATH_MAX, NAME_MAX); deeper trees than MAX_DEPTH are refused by the
# API so a request cannot build what the kernel's path walk (and Python's) cannot handle.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 256


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


class SandboxFS:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, api_path: str | None, *, must_exist: bool = False) -> Path:
        """Map an API path to a real path inside the sandbox, refusing every escape."""
        if not api_path:
            api_path = HOME
        if "\x00" in api_path:
            raise ApiError(400, "ERR_BAD_REQUEST", "path contains a NUL byte")
        if api_path.startswith("/"):
            if api_path != HOME and not api_path.startswith(HOME + "/"):
                raise ApiError(
                    400,
                    "ERR_BAD_REQUEST",
                    f"path {api_path!r} is outside {HOME}: the local emulator only has the "
                    f"sandbox home directory (use {HOME}/... or a relative path)",
                )
            rel = api_path[len(HOME) :].lstrip("/")
        else:
            rel = api_path
        parts = Path(rel).parts
        if ".." in parts:
            raise ApiError(400, "ERR_BAD_REQUEST", f"path {api_path!r} may not contain '..'")
        _check_bounds(api_path, parts)
        candidate = self.root / rel
        # Resolve symlinks of every existing component: a link pointing out is an escape.
        real = candidate.resolve()
        if real != self.root and self.root not in real.parents:
            raise ApiError(400, "ERR_BAD_REQUEST", f"path {api_path!r} escapes the sandbox")
        if must_exist and not os.path.lexists(candidate):
            raise ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {api_path}")
        return candidate

    def api_path(self, real: Path) -> str:
        rel = real.relative_to(self.root).as_posix()
        return HOME if rel in ("", ".") else f"{HOME}/{rel}"

    def entry(self, real: Path) -> dict[str, Any]:
        st = real.lstat()
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
            "name": real.name if real != self.root else "user",
            "type": kind,
            "path": self.api_path(real),
            "size": st.st_size,
            "mode": mode,
            "permissions": stat_mod.filemode(st.st_mode),
            "owner": _name(pwd.getpwuid, st.st_uid),
            "group": _name(grp.getgrgid, st.st_gid),
            "modifiedTime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
        }

    def walk(self, real: Path, depth: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            children = sorted(real.iterdir(), key=lambda p: p.name)
        except NotADirectoryError:
            return [self.entry(real)]
        for child in children:
            out.append(self.entry(child))
            if depth > 1 and child.is_dir() and not child.is_symlink():
                out.extend(self.walk(child, depth - 1))
        return out
