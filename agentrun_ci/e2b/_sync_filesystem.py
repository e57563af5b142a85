"""`sandbox.files` for `Sandbox`: the sync twin of `AsyncFilesystem`."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from .._models import FileEntry
from ._async_sandbox import AsyncSandbox
from ._common import HOME
from ._portal import call as _call

__all__ = ["Filesystem"]


class Filesystem:
    """`sandbox.files` (sync): read, write, list, exists, remove, rename, make_dir, get_info."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._files = sandbox.files

    def read(self, path: str, format: str = "text", **opts: Any) -> Any:
        """The file's text (`format="bytes"` or `"stream"`: its bytes)."""
        return _call(self._files.read(path, format, **opts))

    def write(self, path: str, data: str | bytes, **opts: Any) -> FileEntry:
        """Write a file (parents are created)."""
        return _call(self._files.write(path, data, **opts))

    def write_files(self, files: list[Mapping[str, Any]], **opts: Any) -> list[FileEntry]:
        return _call(self._files.write_files(files, **opts))

    def list(self, path: str = HOME, depth: int = 1, **opts: Any) -> builtins.list[FileEntry]:
        return _call(self._files.list(path, depth, **opts))

    def get_info(self, path: str, **opts: Any) -> FileEntry:
        return _call(self._files.get_info(path, **opts))

    def exists(self, path: str, **opts: Any) -> bool:
        return _call(self._files.exists(path, **opts))

    def remove(self, path: str, **opts: Any) -> None:
        _call(self._files.remove(path, **opts))

    def rename(self, old_path: str, new_path: str, **opts: Any) -> FileEntry:
        return _call(self._files.rename(old_path, new_path, **opts))

    def make_dir(self, path: str, **opts: Any) -> bool:
        return _call(self._files.make_dir(path, **opts))
